#!/usr/bin/env python3
"""Trains braid-tiny: a small model with the Qwen3 architecture (head_dim 128, GQA ratio 2) on the
public-domain English corpus, and writes a standard Hugging Face folder plus the reference
outputs Braid's tests compare against.

Run on the GPU machine (torch, transformers, tokenizers preinstalled), e.g. through
scripts/gpu-train-tiny.sh. Deterministic seed; stops when held-out loss stops improving
meaningfully or the time budget runs out.

Usage: python3 train_tiny.py --corpus DIR --template tokenizer_config.json --out DIR [--train-seconds 240]
"""
import argparse
import json
import math
import random
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen3Config, Qwen3ForCausalLM

import tiny_reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]
CORPORA = ["corpus-austen.txt", "corpus-sotu.txt", "corpus-moby.txt"]
HELD_OUT = 0.02
VOCAB = 4096
SEQ = 512
BATCH = int(__import__("os").environ.get("BATCH", 64))
PROMPTS = ["It was a truth", "The whale", "Fellow citizens", "Mr. Darcy said",
           "The Congress shall", "Call me Ishmael."]
# Seed's reported Qwen3-0.6B k_norm maxima (layers 0, 1, 2, 4, 5), others above 10.
STRESS_MAXIMA = [96.5, 44.5, 44.0, 12.0, 41.75, 34.0, 20.0, 15.0]


def normalize(text):
    """Unwraps hard-wrapped lines: one paragraph per line pair, single spaces."""
    paras = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paras if p)


def split(text):
    cut = text.rfind("\n", 0, int(len(text) * (1 - HELD_OUT)))
    return text[:cut], text[cut + 1:]


def train_tokenizer(train_texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(THINK), special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    def lines():
        for t in train_texts:
            for para in t.split("\n\n"):
                yield para
    tok.train_from_iterator(lines(), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    return tok


def encode(tok, text):
    paras = [p for p in text.split("\n\n") if p.strip()]
    eot = tok.token_to_id("<|endoftext|>")
    out = []
    for enc in tok.encode_batch([p + "\n\n" for p in paras]):
        out.extend(enc.ids)
    out.append(eot)
    return out


def windows(ids, n, seq, gen):
    starts = torch.randint(0, len(ids) - seq - 1, (n,), generator=gen)
    return torch.stack([ids[s:s + seq + 1] for s in starts])


@torch.no_grad()
def evaluate(model, ids, seq):
    model.eval()
    losses = []
    for s in range(0, len(ids) - seq - 1, seq):
        x = ids[s:s + seq + 1].unsqueeze(0).to(DEV)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            logits = model(x[:, :-1]).logits.float()
        losses.append(torch.nn.functional.cross_entropy(logits[0], x[0, 1:]).item())
    model.train()
    return sum(losses) / len(losses)


def write_stress_twin_norms(model, config, out):
    twin = {}
    sd = model.state_dict()
    half = config.head_dim // 2
    for l in range(config.num_hidden_layers):
        k = sd[f"model.layers.{l}.self_attn.k_norm.weight"].float().cpu().clone()
        q = sd[f"model.layers.{l}.self_attn.q_norm.weight"].float().cpu().clone()
        pair = int(torch.argmax(k[:half].abs() + k[half:].abs()))
        s = STRESS_MAXIMA[l % len(STRESS_MAXIMA)] / k[pair].abs().item()
        for d in (pair, pair + half):
            k[d] *= s
            q[d] /= s
        twin[f"model.layers.{l}.self_attn.k_norm.weight"] = k.to(torch.bfloat16).contiguous()
        twin[f"model.layers.{l}.self_attn.q_norm.weight"] = q.to(torch.bfloat16).contiguous()
    save_file(twin, str(out / tiny_reference.TWIN_NORMS), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--template", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-seconds", type=float, default=240)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    # 1. Data and tokenizer.
    texts = [normalize((Path(args.corpus) / f).read_text()) for f in CORPORA]
    parts = [split(t) for t in texts]
    tok = train_tokenizer([p[0] for p in parts])
    train_ids = torch.tensor(sum((encode(tok, p[0]) for p in parts), []), dtype=torch.long)
    held = [torch.tensor(encode(tok, p[1]), dtype=torch.long) for p in parts]
    held_ids = torch.cat(held)
    print(f"tokenizer + encoding: {time.time() - t0:.1f}s; train tokens {len(train_ids):,}, held-out {len(held_ids):,}", flush=True)

    # 2. Model.
    config = Qwen3Config(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, head_dim=128, max_position_embeddings=2048,
        rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True, attention_bias=False,
        bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"), initializer_range=0.02,
    )
    model = Qwen3ForCausalLM(config).to(DEV).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=DEV == "cuda")
    gen = torch.Generator().manual_seed(args.seed)

    # 3. Train until held-out loss stops improving meaningfully or time runs out.
    train_start = time.time()
    step, best, best_state, history, est_total = 0, float("inf"), None, [], None
    warmup, eval_every = 100, 200
    while True:
        elapsed = time.time() - train_start
        if step == 50:
            est_total = int(args.train_seconds / (elapsed / 50))
        total = est_total or 10_000
        lr = 3e-3 * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = windows(train_ids, BATCH, SEQ, gen).to(DEV)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        done = elapsed > args.train_seconds
        if step % eval_every == 0 or done:
            ev = evaluate(model, held_ids[:SEQ * 64 + 1], SEQ)
            history.append((step, round(time.time() - train_start, 1), round(loss.item(), 4), round(ev, 4)))
            print(f"step {step} train {loss.item():.4f} held-out {ev:.4f} lr {lr:.2e} t {time.time() - train_start:.0f}s", flush=True)
            if ev < best:
                best = ev
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            # Meaningful = at least 0.5% better than three evaluations ago.
            if len(history) > 3 and history[-1][3] > history[-4][3] * 0.995:
                print("held-out loss stopped improving", flush=True)
                done = True
        if done:
            break
    train_secs = time.time() - train_start
    model.load_state_dict(best_state)

    # 4. Write the HF folder (bf16).
    model = model.to(torch.bfloat16).eval()
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.7
    model.generation_config.top_p = 0.9
    model.generation_config.top_k = 40
    model.generation_config.repetition_penalty = 1.1
    model.generation_config.eos_token_id = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    template = json.loads(Path(args.template).read_text())["chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "model_max_length": 2048, "chat_template": template,
    }, indent=2))

    # 5. Stress twin: k_norm scaled up on one RoPE pair per layer to the seed's maxima, q_norm scaled
    #    down on the same pair: the same function in exact arithmetic, stressed bf16 rounding.
    write_stress_twin_norms(model, config, out)

    # 6. Reference outputs (HF float32 on the CPU: no TF32) and samples for the card.
    reference = tiny_reference.compute(out, PROMPTS, [h.tolist() for h in held])
    ref = Qwen3ForCausalLM.from_pretrained(out, dtype=torch.float32).to(DEV).eval()
    with torch.no_grad():
        # Samples for the model card.
        samples = []
        torch.manual_seed(args.seed)
        for p in PROMPTS[:4]:
            x = torch.tensor([tok.encode(p).ids]).to(DEV)
            y = ref.generate(x, max_new_tokens=48, do_sample=True, temperature=0.7, top_p=0.9, top_k=40,
                             repetition_penalty=1.1, pad_token_id=config.pad_token_id)
            samples.append(tok.decode(y[0].tolist()))


    # 7. Model card.
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    card = f"""# braid-tiny

A small language model with the **Qwen3 architecture** (`Qwen3ForCausalLM`), trained from scratch on
public-domain English so that Braid's output can be *read*. It is Braid's default model.

| | |
|---|---|
| architecture | Qwen3: {config.num_hidden_layers} layers, hidden {config.hidden_size}, {config.num_attention_heads} query / {config.num_key_value_heads} KV heads (GQA 2), head_dim {config.head_dim}, intermediate {config.intermediate_size}, tied embeddings, RoPE theta 1e6 |
| parameters | {n_params:,} |
| vocabulary | {VOCAB} (byte-level BPE trained on the same text; special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, plus `<think>`, `</think>`) |
| weights | `model.safetensors`, bf16, {size_mb:.1f} MB |
| data | Jane Austen's six novels, 233 State of the Union addresses (1790-2021), Moby Dick; the last {HELD_OUT:.0%} of each held out; provenance in Braid's `shared/data/README.md` |
| training | {step} steps of {BATCH}x{SEQ} tokens, AdamW (lr 3e-3, cosine, wd 0.1), bf16 autocast, seed {args.seed}; {train_secs:.0f} s on {torch.cuda.get_device_name() if DEV == 'cuda' else 'CPU'} ({time.strftime('%Y-%m-%d')}); stopped when held-out loss improved < 0.5% over 3 evaluations or the time budget ended |
| held-out loss | {best:.4f} nats/token (perplexity {math.exp(best):.2f}) on 64 windows of {SEQ} tokens |
| HF float32 perplexity (reference.json) | {reference['perplexity']['ppl']:.3f} over 12 windows of 256 tokens |
| licence | text public domain; weights MIT OR Apache-2.0 (Braid's licence) |

Context: trained on {SEQ}-token windows; `max_position_embeddings` is 2048 but quality beyond {SEQ}
positions is untested. It has no chat training: the chat template works, the answers are prose.

Reproducibility: the seed fixes data order and initialisation; GPU training is not bitwise
deterministic (atomics in cuBLAS / autograd), so a rerun gives a slightly different model.

## Samples (HF transformers, float32, temperature 0.7, top-p 0.9, top-k 40, repetition penalty 1.1)

""" + "\n".join(f"- {s!r}" for s in samples) + f"""

## Training curve (step, seconds, train loss, held-out loss)

{history}

## Files beside the weights

- `reference.json`: HF float32 (eager, computed on the CPU so no TF32 enters; `scripts/tiny_reference.py` recomputes it) last-position logits and 32 greedy ids for {len(PROMPTS)} prompts;
  held-out perplexity windows and HF's mean NLL; the same for the stress twin.
- `stress_twin_norms.safetensors`: the stress twin's q_norm / k_norm (k_norm maxima per layer
  {reference['stress_twin_k_norm_max']}); replace those tensors in this folder to get it.

## Reproduce

`scripts/gpu-train-tiny.sh` (one device call), or on any CUDA machine with torch and transformers:
`python3 scripts/train_tiny.py --corpus <shared/data/corpus> --template <qwen3 tokenizer_config.json> --out models/braid-tiny`
"""
    (out / "README.md").write_text(card)
    (out / "train_log.json").write_text(json.dumps({"history": history, "steps": step, "train_secs": train_secs,
                                                     "params": n_params, "best_held_out": best}))
    print(card)
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
