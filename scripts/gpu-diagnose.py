#!/usr/bin/env python3
"""GPU diagnosis for the CUDA reference path on braid-tiny (run by the device tool, binary at
/tmp/braid-cli): how fragile each prompt's greedy path is under HF's own lower-precision modes,
and whether Braid's KV-cache decode agrees with a fresh prefill of the same ids."""
import json, subprocess, torch
from tokenizers import Tokenizer
from transformers import Qwen3ForCausalLM
M = "models/braid-tiny"
ref = json.load(open(f"{M}/reference.json"))
tok = Tokenizer.from_file(f"{M}/tokenizer.json")

def agree(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

for label, dt, tf32 in [("hf f32 (tf32 off)", torch.float32, False), ("hf f32 (tf32 on)", torch.float32, True), ("hf bf16", torch.bfloat16, False)]:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    m = Qwen3ForCausalLM.from_pretrained(M, dtype=dt, attn_implementation="eager").cuda().eval()
    res = []
    for p in ref["prompts"]:
        x = torch.tensor([p["ids"]]).cuda()
        y = m.generate(x, max_new_tokens=32, do_sample=False, repetition_penalty=1.0, eos_token_id=None, pad_token_id=0)
        res.append(agree(y[0, len(p["ids"]):].tolist(), p["greedy_ids"]))
    print(f"{label}: agreement with CPU f32 reference {res}")
torch.backends.cuda.matmul.allow_tf32 = False

def braid(args):
    out = subprocess.run(["/tmp/braid-cli", "generate", "--model", M, "--device", "cuda", "--temperature", "0",
                          "--repetition-penalty", "1", "--ignore-eos", "--format", "json", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)

for dtype in ["f32", "bf16"]:
    p = ref["prompts"][0]
    g = braid(["--dtype", dtype, "--prompt", p["text"], "--max-tokens", "12"])
    ids = g["prompt_ids"] + g["output_ids"]
    fresh = []
    for k in range(len(p["ids"]), len(ids)):
        text = tok.decode(ids[:k])
        h = braid(["--dtype", dtype, "--prompt", text, "--max-tokens", "1"])
        same_prompt = h["prompt_ids"] == ids[:k]
        fresh.append((ids[k], h["output_ids"][0], same_prompt))
    print(f"braid {dtype}: (cache decode, fresh prefill, same ids) {fresh}")
    print(f"braid {dtype} vs reference: {agree(g['output_ids'], p['greedy_ids'])}; braid ids {g['output_ids']}; ref {p['greedy_ids'][:12]}")
