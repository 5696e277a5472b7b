"""Dump Hugging Face transformers' activations at Braid's taps, for `braid-cli diff --against`.

Runs one prompt through Qwen3ForCausalLM (eager attention) with forward hooks on the same taps
Braid records (names and layouts in crates/braid-model/src/taps.rs), the last position's
logits, and a greedy continuation, and writes them to one safetensors file:

    embed, layers.L.{input_norm,q,k,v,q_rope,k_rope,attn,o_proj,residual,post_norm,mlp_act,
    mlp_out,output}, norm, logits (f32), input_ids, greedy (i64); metadata: dtype, model,
    transformers version.

usage: python scripts/hf_dump.py MODEL_DIR --prompt TEXT [--dtype float32|bfloat16|float16]
                                 [--new-tokens 32] [--device cpu|cuda] --out FILE.safetensors
Then:  braid-cli diff --model MODEL_DIR --against FILE.safetensors [--dtype bf16]
"""
import argparse
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    import transformers
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import Qwen3ForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, a.dtype)
    model = Qwen3ForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="eager").to(a.device).eval()
    cfg = model.config
    ids = Tokenizer.from_file(str(a.model / "tokenizer.json")).encode(a.prompt).ids
    t = len(ids)
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads

    taps, rope = {}, {}

    def put(name, x):
        taps[name] = x.detach()[0].float().cpu().contiguous()

    def out_hook(name):
        return lambda m, i, o: put(name, o[0] if isinstance(o, tuple) else o)

    def in_hook(name):
        return lambda m, i: put(name, i[0])

    m = model.model
    m.embed_tokens.register_forward_hook(out_hook("embed"))
    m.rotary_emb.register_forward_hook(lambda mod, i, o: rope.update(cos=o[0], sin=o[1]))
    m.norm.register_forward_hook(out_hook("norm"))
    for l, layer in enumerate(m.layers):
        p = f"layers.{l}."
        at = layer.self_attn
        layer.input_layernorm.register_forward_hook(out_hook(p + "input_norm"))
        for n in ("q", "k", "v"):
            getattr(at, f"{n}_proj").register_forward_hook(out_hook(p + n))
        # q_norm/k_norm see [b, t, heads, hd]; RoPE is applied inside attention's forward, so
        # the tap applies HF's own apply_rotary_pos_emb to the normed q and k -> [heads, t, hd].
        normed = {}
        at.q_norm.register_forward_hook(lambda mod, i, o, normed=normed: normed.update(q=o.transpose(1, 2)))

        def k_hook(mod, i, o, normed=normed, p=p):
            q, k = apply_rotary_pos_emb(normed["q"], o.transpose(1, 2), rope["cos"], rope["sin"])
            put(p + "q_rope", q)
            put(p + "k_rope", k)

        at.k_norm.register_forward_hook(k_hook)
        at.o_proj.register_forward_pre_hook(in_hook(p + "attn"))
        at.o_proj.register_forward_hook(out_hook(p + "o_proj"))
        layer.post_attention_layernorm.register_forward_pre_hook(in_hook(p + "residual"))
        layer.post_attention_layernorm.register_forward_hook(out_hook(p + "post_norm"))
        layer.mlp.down_proj.register_forward_pre_hook(in_hook(p + "mlp_act"))
        layer.mlp.register_forward_hook(out_hook(p + "mlp_out"))
        layer.register_forward_hook(out_hook(p + "output"))

    x = torch.tensor([ids], device=a.device)
    with torch.no_grad():
        logits = model(x).logits[0, -1].float().cpu()
        greedy = []
        if a.new_tokens > 0:
            # Hooks stay on, but only the prompt's taps are kept.
            saved = dict(taps)
            model.generation_config.eos_token_id = None  # Braid's greedy ignores end-of-sequence
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=a.new_tokens, do_sample=False,
                                 pad_token_id=0)
            greedy = out[0, t:].tolist()
            taps.clear()
            taps.update(saved)
    for name in list(taps):
        v = taps[name]
        if name.endswith("q_rope") or name.endswith("k_rope"):
            assert v.shape[1] == t and v.shape[2] == hd, (name, v.shape)
        else:
            assert v.shape[0] == t, (name, v.shape)
    taps["logits"] = logits
    taps["input_ids"] = torch.tensor(ids, dtype=torch.int64)
    taps["greedy"] = torch.tensor(greedy, dtype=torch.int64)
    meta = {"dtype": a.dtype, "model": str(a.model), "transformers": transformers.__version__, "device": a.device}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(taps, str(a.out), metadata=meta)
    print(f"{a.out}: {len(taps)} tensors, {t} prompt tokens, {len(greedy)} greedy tokens, {a.dtype} on {a.device}")


if __name__ == "__main__":
    main()
