#!/usr/bin/env python3
"""HF transformers float32 reference outputs for braid-tiny and its stress twin, computed on
the CPU (no TF32), written to <model>/reference.json.

Standalone: python3 scripts/tiny_reference.py models/braid-tiny --corpus ../shared/data/corpus
(recomputes the held-out windows from the corpus with the model's own tokenizer).
"""
import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import Qwen3ForCausalLM

TWIN_NORMS = "stress_twin_norms.safetensors"
GREEDY = 32


def _load(folder, twin=False):
    model = Qwen3ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    if twin:
        with torch.no_grad():
            for name, w in load_file(str(Path(folder) / TWIN_NORMS)).items():
                model.get_parameter(name).copy_(w.float())
    return model


@torch.no_grad()
def _prompts(model, tok, prompts, pad):
    out = []
    for p in prompts:
        ids = tok.encode(p).ids
        x = torch.tensor([ids])
        logits = model(x).logits[0, -1].float()
        greedy = model.generate(x, max_new_tokens=GREEDY, do_sample=False, repetition_penalty=1.0, eos_token_id=None,
                                pad_token_id=pad)[0, len(ids):].tolist()
        out.append({"text": p, "ids": ids, "last_logits": logits.tolist(), "greedy_ids": greedy})
    return out


@torch.no_grad()
def compute(folder, prompts, held_ids):
    """held_ids: one list of token ids per corpus' held-out tail (the first 1024 are used)."""
    folder = Path(folder)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = tok.token_to_id("<|endoftext|>")
    ref = _load(folder)
    reference = {"device": "cpu", "dtype": "float32", "attn_implementation": "eager",
                 "prompts": _prompts(ref, tok, prompts, pad)}
    windows = [[ids[s:s + 256] for s in range(0, 1024, 256)] for ids in held_ids]
    nll, count = 0.0, 0
    for corpus in windows:
        for w in corpus:
            x = torch.tensor([w])
            lg = ref(x).logits[0].double()
            nll += torch.nn.functional.cross_entropy(lg[:-1], x[0, 1:], reduction="sum").item()
            count += len(w) - 1
    reference["perplexity"] = {"windows": windows, "mean_nll": nll / count, "ppl": math.exp(nll / count)}
    twin = _load(folder, twin=True)
    reference["stress_twin"] = _prompts(twin, tok, prompts, pad)
    norms = load_file(str(folder / TWIN_NORMS))
    layers = sorted({int(k.split(".")[2]) for k in norms})
    reference["stress_twin_k_norm_max"] = [round(norms[f"model.layers.{l}.self_attn.k_norm.weight"].float().abs().max().item(), 3)
                                           for l in layers]
    (folder / "reference.json").write_text(json.dumps(reference))
    return reference


def main():
    import train_tiny
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--corpus", required=True)
    args = ap.parse_args()
    tok = Tokenizer.from_file(str(Path(args.folder) / "tokenizer.json"))
    held = []
    for f in train_tiny.CORPORA:
        _, tail = train_tiny.split(train_tiny.normalize((Path(args.corpus) / f).read_text()))
        held.append(train_tiny.encode(tok, tail))
    r = compute(args.folder, train_tiny.PROMPTS, held)
    print(f"perplexity {r['perplexity']['ppl']:.4f}; twin k_norm maxima {r['stress_twin_k_norm_max']}")


if __name__ == "__main__":
    main()
