#!/usr/bin/env python3
"""Writes the small random Qwen3 fixtures under tests/fixtures/ and their HF reference outputs.

Each fixture is a Hugging Face folder written by transformers' `save_pretrained`
(config.json, safetensors, generation_config.json) plus a small byte-level BPE tokenizer trained
here on the public-domain corpus, Qwen3's chat template, and `expected.json`: HF float32
last-position logits and greedy continuations for a few prompts, and chat-template renderings
from `apply_chat_template`.

Usage: python3 scripts/make_fixtures.py [--corpus DIR] [--out tests/fixtures]
Needs torch, transformers (5.x) and tokenizers.
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers, AddedToken
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]

FIXTURES = [
    # name, config overrides, options
    dict(name="tied-gqa2-hd32-bf16", heads=4, kv=2, head_dim=32, tied=True, store_head=False,
         dtype=torch.bfloat16, theta=1e6, eps=1e-6, extreme_k_norm=True, spelling="published"),
    dict(name="untied-gqa1-hd16-f32-sharded", heads=4, kv=4, head_dim=16, tied=False, store_head=True,
         dtype=torch.float32, theta=10000.0, eps=1e-5, extreme_k_norm=False, spelling="hf5", shard=True),
    dict(name="tied-stored-gqa3-hd128-f32", heads=6, kv=2, head_dim=128, tied=True, store_head=True,
         dtype=torch.float32, theta=5e5, eps=1e-6, extreme_k_norm=True, spelling="hf5"),
]

HIDDEN, INTER, LAYERS, VOCAB = 64, 128, 2, 512
PROMPTS = ["It was a truth universally acknowledged", "The whale", "Fellow citizens of the Senate"]
GREEDY_TOKENS = 24
CHATS = [
    dict(messages=[{"role": "user", "content": "Hello there!"}], add_generation_prompt=True, enable_thinking=True),
    dict(messages=[{"role": "user", "content": "Hello there!"}], add_generation_prompt=True, enable_thinking=False),
    dict(messages=[{"role": "system", "content": "You are terse."},
                   {"role": "user", "content": "Name a whale."},
                   {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\nMoby Dick."},
                   {"role": "user", "content": "Another?"}], add_generation_prompt=True, enable_thinking=True),
]


def train_tokenizer(corpus_dir: Path, vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = (corpus_dir / "corpus-austen.txt").read_text()[:400_000]
    tok.train_from_iterator([text], trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    return tok


def write_tokenizer(folder: Path, tok: Tokenizer, chat_template: str):
    tok.save(str(folder / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "chat_template": chat_template,
        "added_tokens_decoder": {},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def perturb_norms(model, gen, extreme: bool):
    """Norm weights far from 1; on extreme fixtures, k_norm maxima near 100 on chosen RoPE pairs,
    compensated in q_norm on the same pairs so the function is unchanged in exact arithmetic."""
    maxima = [96.5, 44.5, 44.0, 41.75]
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            for norm in [layer.input_layernorm, layer.post_attention_layernorm,
                         layer.self_attn.q_norm, layer.self_attn.k_norm]:
                norm.weight.copy_(1.0 + 0.4 * (torch.rand(norm.weight.shape, generator=gen) - 0.5))
            if extreme:
                hd = layer.self_attn.k_norm.weight.shape[0]
                half = hd // 2
                pair = (3 * i + 1) % half
                scale = maxima[i % len(maxima)] / layer.self_attn.k_norm.weight[pair].item()
                for d in (pair, pair + half):
                    layer.self_attn.k_norm.weight[d] *= scale
                    layer.self_attn.q_norm.weight[d] /= scale
        model.model.norm.weight.copy_(1.0 + 0.4 * (torch.rand(model.model.norm.weight.shape, generator=gen) - 0.5))


def greedy(model, ids, n):
    ids = list(ids)
    out, gaps = [], []
    for _ in range(n):
        logits = model(torch.tensor([ids])).logits[0, -1].double()
        top2 = torch.topk(logits, 2)
        gaps.append((top2.values[0] - top2.values[1]).item())
        nxt = int(top2.indices[0])
        out.append(nxt)
        ids.append(nxt)
    return out, min(gaps)


def save(model, fx, tok, folder: Path):
    for f in folder.glob("model*.safetensors*"):
        f.unlink()
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.7
    model.generation_config.top_p = 0.9
    model.generation_config.top_k = 20
    model.generation_config.eos_token_id = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    kwargs = {"max_shard_size": "60KB"} if fx.get("shard") else {}
    model.save_pretrained(folder, **kwargs)
    # transformers drops tied weights; store lm_head explicitly when asked (published Qwen3 does).
    if fx["tied"] and fx["store_head"]:
        f = folder / "model.safetensors"
        sd = load_file(f)
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
        save_file(sd, f, metadata={"format": "pt"})
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if fx["spelling"] == "published":
        rp = cfg.pop("rope_parameters", None) or {}
        cfg["rope_theta"] = rp.get("rope_theta", fx["theta"])
        cfg["rope_scaling"] = None
        cfg["torch_dtype"] = cfg.pop("dtype", "bfloat16")
    cfg_path.write_text(json.dumps(cfg, indent=2))


def make(fx, tok, chat_template, out_dir: Path):
    folder = out_dir / fx["name"]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for seed in range(100):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        config = Qwen3Config(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
            num_attention_heads=fx["heads"], num_key_value_heads=fx["kv"], head_dim=fx["head_dim"],
            max_position_embeddings=256, rms_norm_eps=fx["eps"], rope_theta=fx["theta"],
            tie_word_embeddings=fx["tied"], attention_bias=False, initializer_range=0.2,
            bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
            pad_token_id=tok.token_to_id("<|endoftext|>"),
        )
        model = Qwen3ForCausalLM(config).float().eval()
        perturb_norms(model, gen, fx["extreme_k_norm"])
        save(model.to(fx["dtype"]), fx, tok, folder)
        # The reference: HF loading the folder as stored, computing in float32, eager attention.
        ref = Qwen3ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        expected = {"prompts": []}
        worst_gap = float("inf")
        with torch.no_grad():
            for p in PROMPTS:
                ids = tok.encode(p).ids
                logits = ref(torch.tensor([ids])).logits[0].float()
                cont, gap = greedy(ref, ids, GREEDY_TOKENS)
                worst_gap = min(worst_gap, gap)
                expected["prompts"].append({
                    "text": p, "ids": ids,
                    "last_logits": logits[-1].tolist(),
                    "all_logits": logits.tolist(),
                    "greedy_ids": cont, "min_top2_gap": gap,
                })
        # Greedy ids must be robust to float rounding: retry seeds until no step is a near-tie.
        if worst_gap > 1e-2:
            break
    expected["seed"] = seed
    write_tokenizer(folder, tok, chat_template)
    hf_tok = AutoTokenizer.from_pretrained(folder)
    expected["chat"] = []
    for chat in CHATS:
        text = hf_tok.apply_chat_template(chat["messages"], tokenize=False,
                                          add_generation_prompt=chat["add_generation_prompt"],
                                          enable_thinking=chat["enable_thinking"])
        expected["chat"].append({**chat, "text": text})
    expected["roundtrip"] = [{"text": t, "ids": hf_tok.encode(t, add_special_tokens=False)}
                             for t in ["Hello, world! Ünïcødé ✓ 🐋", "<|im_start|>user\nhi<|im_end|>"]]
    (folder / "expected.json").write_text(json.dumps(expected))
    print(f"{fx['name']}: seed {seed}, min top-2 gap {worst_gap:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared/data/corpus"))
    ap.add_argument("--template", default=str(ROOT.parent / "shared/data/qwen3-tokenizer/tokenizer_config.json"))
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    chat_template = json.loads(Path(args.template).read_text())["chat_template"]
    tok = train_tokenizer(Path(args.corpus), 400)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fx in FIXTURES:
        make(fx, tok, chat_template, out)


if __name__ == "__main__":
    main()
