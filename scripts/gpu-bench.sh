#!/usr/bin/env bash
# One device call (issue 6): batch-1 decode latency on the random Qwen3-0.6B-shaped model
# (scripts/accuracy.py make), HF transformers' eager generate vs `braid-cli bench latency`
# (eager engine loop, device-state steps, CUDA graph replay) on the same weights and prompt,
# plus `check-kernels` after the attention change. Builds nothing: carry dist/ (CUDA braid-cli).
set -uo pipefail
export PYTHONUNBUFFERED=1
FINAL=$OUT; OUT=/tmp/results; mkdir -p $OUT
trap 'tar -C /tmp -czf $FINAL/results.tar.gz results' EXIT
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt
M=/tmp/q06
[ -f $M/config.json ] || python3 scripts/accuracy.py make $M > $OUT/make.log 2>&1
$BIN check-kernels --device cuda --dtype bf16 --bench --iters 50 > $OUT/check-kernels.txt 2>&1; echo "check-kernels exit $?" >> $OUT/check-kernels.txt
grep -cE " ok$" $OUT/check-kernels.txt; grep -E "FAIL|exit|^rms_norm_qkv  +1 |^attention +1 " $OUT/check-kernels.txt
# generate streams on the graph path (pure greedy, fused plan).
$BIN generate --model $M --device cuda --dtype bf16 --plan fused --prompt "The history of the city begins with" --max-tokens 256 --ignore-eos --temperature 0 --repetition-penalty 1 2>&1 >/dev/null | tail -1 | tee $OUT/generate.txt
PL=${PROMPT_LEN:-128}; NT=${NEW_TOKENS:-256}
python3 scripts/hf_bench.py $M --prompt-len $PL --new-tokens $NT --runs 3 2>&1 | grep -v Loading | tee $OUT/hf.json
for plan in fused fused-f32; do
  timeout 240 $BIN bench latency --model $M --device cuda --dtype bf16 --plan $plan --prompt-len $PL --new-tokens $NT --runs 3 \
    --json $OUT/braid-$plan.json 2>&1 | tee $OUT/braid-$plan.txt
done
# Context scaling (attention's share): the fused plan at a 1024-token prompt.
timeout 120 $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --prompt-len 1024 --new-tokens $NT --runs 3 \
  --json $OUT/braid-fused-1024.json 2>&1 | tee $OUT/braid-fused-1024.txt
python3 - <<'PY' | tee $OUT/ratios.txt
import json
hf = json.load(open("/tmp/results/hf.json"))
print("HF eager decode: %.1f tok/s" % hf["hf_decode_tok_per_s"])
for plan in ["fused", "fused-f32"]:
    try:
        b = json.load(open(f"/tmp/results/braid-{plan}.json"))
    except Exception as e:
        print(plan, "missing", e); continue
    for w in b["ways"]:
        print("%-10s %-20s %8.1f tok/s  %5.2fx HF  %5.1f%% of floor (%.0f tok/s)" % (
            plan, w["name"], w["tok_per_s"], w["tok_per_s"] / hf["hf_decode_tok_per_s"], 100 * w["of_floor"], b["floor_tok_per_s"]))
PY
