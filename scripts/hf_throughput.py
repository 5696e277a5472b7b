"""HF transformers' offline throughput on (the first --seqs sequences of) the workload that
`braid-cli bench throughput --save-workload FILE` wrote: static batches of --batch prompts,
left-padded, each batch generating its longest requested output (eos ignored), eager attention.
Output tok/s counts the requested tokens only (the rest is static batching's waste). Prints one
JSON line.

usage: python scripts/hf_throughput.py MODEL_DIR WORKLOAD.json [--seqs 64] [--batch 64]
"""
import argparse, json, time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("workload")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    from transformers import Qwen3ForCausalLM
    w = json.load(open(a.workload))
    prompts, outs = w["prompts"][: a.seqs], w["output_lens"][: a.seqs]
    model = Qwen3ForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype), attn_implementation="eager").cuda().eval()
    model.generation_config.eos_token_id = None

    def run(batch_prompts, new_tokens):
        n = max(len(p) for p in batch_prompts)
        ids = torch.zeros((len(batch_prompts), n), dtype=torch.long, device="cuda")
        mask = torch.zeros_like(ids)
        for i, p in enumerate(batch_prompts):
            ids[i, n - len(p):] = torch.tensor(p, device="cuda")
            mask[i, n - len(p):] = 1
        g = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        assert g.shape[1] == n + new_tokens

    with torch.no_grad():
        run([p[:32] for p in prompts[:4]], 4)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(prompts), a.batch):
            run(prompts[i:i + a.batch], max(outs[i:i + a.batch]))
        torch.cuda.synchronize()
        secs = time.perf_counter() - t
    print(json.dumps({"hf_seqs": len(prompts), "hf_batch": a.batch, "hf_output_tokens": sum(outs),
                      "hf_secs": secs, "hf_output_tok_per_s": sum(outs) / secs}))


if __name__ == "__main__":
    main()
