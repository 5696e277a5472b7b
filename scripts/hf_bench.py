"""HF transformers' batch-1 greedy decode speed on the same weights and prompt as
`braid-cli bench latency` (synthetic prompt ids (i * 7919 + 13) % vocab), eager attention,
ignoring end-of-sequence. Prints one JSON line.

usage: python scripts/hf_bench.py MODEL_DIR [--prompt-len 128] [--new-tokens 256] [--runs 3] [--dtype bfloat16]
"""
import argparse, json, statistics, time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    from transformers import Qwen3ForCausalLM
    model = Qwen3ForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype), attn_implementation="eager").cuda().eval()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(a.prompt_len)]], device="cuda")
    model.generation_config.eos_token_id = None
    out = {}
    with torch.no_grad():
        # Prefill alone, then prefill + decode: decode tok/s = (n - 1) / (total - prefill).
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=0)
        pre, tot = [], []
        for _ in range(a.runs):
            torch.cuda.synchronize(); t = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize(); pre.append(time.perf_counter() - t)
            t = time.perf_counter()
            g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.new_tokens, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize(); tot.append(time.perf_counter() - t)
        assert g.shape[1] == a.prompt_len + a.new_tokens
        runs = [(a.new_tokens - 1) / (t - p) for t, p in zip(tot, pre)]
        out = {"hf_decode_tok_per_s": statistics.median(runs), "runs": [round(r, 1) for r in runs],
               "hf_prefill_ms": 1e3 * statistics.median(pre), "tokens": g[0, a.prompt_len:a.prompt_len + 16].tolist()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
