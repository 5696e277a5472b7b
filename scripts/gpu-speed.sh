#!/usr/bin/env bash
# One device call: kernel checks + per-kernel timings (bf16), then batch-1 decode speed on a
# random Qwen3-0.6B-shaped model: HF transformers eager vs Braid's plans, same card, same call.
# Carry dist/ (see scripts/gpu-accuracy.sh). Logs to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt
$BIN check-kernels --device cuda --dtype f32 2>&1 | tee $OUT/check-kernels-f32.log | tail -3
$BIN check-kernels --device cuda --dtype bf16 2>&1 | tee $OUT/check-kernels-bf16.log | tail -3
$BIN bench kernels --device cuda --dtype bf16 --iters 100 2>&1 | tee $OUT/bench-kernels-bf16.log
M=/tmp/q06
python3 scripts/accuracy.py make $M > $OUT/make.log 2>&1
PROMPT="It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."
python3 - "$M" "$PROMPT" <<'PY' 2>&1 | grep -v Loading | tee $OUT/speed.log
import sys, time, torch
from transformers import Qwen3ForCausalLM, AutoTokenizer
from tokenizers import Tokenizer
m, prompt = sys.argv[1], sys.argv[2]
ids = Tokenizer.from_file(f"{m}/tokenizer.json").encode(prompt).ids
model = Qwen3ForCausalLM.from_pretrained(m, dtype=torch.bfloat16, attn_implementation="eager").cuda().eval()
x = torch.tensor([ids], device="cuda")
kw = dict(do_sample=False, repetition_penalty=1.0, temperature=None, top_p=None, top_k=None)
with torch.no_grad():
    model.generate(x, max_new_tokens=8, min_new_tokens=8, **kw)
    rates = []
    for _ in range(3):
        torch.cuda.synchronize(); t = time.time()
        model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw)
        torch.cuda.synchronize(); t1 = time.time() - t
        t = time.time()
        model.generate(x, max_new_tokens=257, min_new_tokens=257, **kw)
        torch.cuda.synchronize(); rates.append(256 / (time.time() - t - t1))
rates.sort()
print(f"HF transformers bf16 eager, batch 1, {len(ids)}-token prompt, 256 new tokens: decode {rates[1]:.1f} tok/s (median of 3)")
PY
for plan in reference fused fused-f32; do
  for i in 1 2 3; do
    $BIN generate --model $M --device cuda --dtype bf16 --plan $plan --prompt "$PROMPT" --max-tokens 256 \
      --ignore-eos --temperature 0 --repetition-penalty 1 --format json 2>/dev/null \
      | python3 -c "import json,sys; g=json.load(sys.stdin); print(f'braid $plan run $i: decode {g[\"decode_tok_per_s\"]:.1f} tok/s, prefill {g[\"prefill_tok_per_s\"]:.1f} tok/s')"
  done
done 2>&1 | tee -a $OUT/speed.log
