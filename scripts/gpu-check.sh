#!/usr/bin/env bash
# One device call: runs the CUDA build of braid-cli (carried in dist/, built here with
#   scripts/setup-llvm.sh && CUDARC_CUDA_VERSION=13000 cargo build --profile gpu -p braid-cli --features cuda
#   mkdir -p dist && xz -T2 -c target/gpu/braid-cli > dist/braid-cli.xz)
# on braid-tiny: greedy ids against HF's float32 reference in f32 and bf16, and decode speed
# against HF transformers on the same card, in the same call. Logs go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
date -u | tee -a $OUT/gpu.txt
python3 - <<'PY' 2>&1 | tee $OUT/check.log
import json, subprocess, time, torch
from transformers import Qwen3ForCausalLM
M = "models/braid-tiny"
ref = json.load(open(f"{M}/reference.json"))

def braid(prompt, dtype, n, extra=()):
    out = subprocess.run(["/tmp/braid-cli", "generate", "--model", M, "--device", "cuda", "--dtype", dtype,
                          "--prompt", prompt, "--max-tokens", str(n), "--temperature", "0", "--repetition-penalty", "1", "--ignore-eos",
                          "--format", "json", *extra], capture_output=True, text=True)
    if out.returncode != 0:
        print("FAILED", dtype, out.stderr[-2000:]); return None
    return json.loads(out.stdout)

print("== greedy ids vs HF float32 reference (32 tokens per prompt)")
for dtype in ["f32", "bf16"]:
    agree = []
    for p in ref["prompts"]:
        g = braid(p["text"], dtype, 32)
        if g is None: break
        want = p["greedy_ids"]
        n = next((i for i, (a, b) in enumerate(zip(g["output_ids"], want)) if a != b), len(want))
        agree.append(n)
        assert g["prompt_ids"] == p["ids"], "tokenizer mismatch"
    print(f"braid cuda {dtype}: tokens agreeing with HF f32 before first difference: {agree}")

print("== decode speed, batch 1, prompt 'It was a truth', 256 new tokens (median of 3)")
rates = {}
for dtype in ["f32", "bf16"]:
    runs = [braid("It was a truth", dtype, 256) for _ in range(3)]
    r = sorted(x["decode_tok_per_s"] for x in runs if x)
    rates[f"braid {dtype}"] = r[len(r) // 2] if r else float("nan")
from tokenizers import Tokenizer
tok = Tokenizer.from_file(f"{M}/tokenizer.json")
x = torch.tensor([tok.encode("It was a truth").ids]).cuda()
for name, dt in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
    m = Qwen3ForCausalLM.from_pretrained(M, dtype=dt).cuda().eval()
    ts = []
    for _ in range(3):
        torch.cuda.synchronize(); t = time.time()
        m.generate(x, max_new_tokens=256, min_new_tokens=256, do_sample=False, repetition_penalty=1.0, pad_token_id=0)
        torch.cuda.synchronize(); ts.append(256 / (time.time() - t))
    rates[f"hf eager {name}"] = sorted(ts)[1]
for k, v in rates.items():
    print(f"{k}: {v:.1f} tok/s")
print(f"ratio braid/hf bf16: {rates['braid bf16'] / rates['hf eager bf16']:.2f}; f32: {rates['braid f32'] / rates['hf eager f32']:.2f}")
PY
