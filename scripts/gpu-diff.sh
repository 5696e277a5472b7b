#!/usr/bin/env bash
# One device call (issue 5): the validation toolkit on the random Qwen3-0.6B-shaped
# extreme-k_norm model of scripts/accuracy.py: `inspect`; `diff` tap by tap against HF
# transformers' own bf16 and f32 activations (scripts/hf_dump.py); `diff --write-plan` (the
# automatic plan, calibrated on CUDA); `generate --plan auto` (calibrate + cache, then load);
# decode speed of the plans in the same call. Carry dist/ (CUDA braid-cli + tokenizer).
# The float32 truth of `diff` runs on $TRUTH (default cpu: Burn's CUDA f32 matmul is only
# TF32-accurate). Everything lands in $OUT/results.tar.gz.
set -uo pipefail
export PYTHONUNBUFFERED=1
TRUTH=${TRUTH:-cpu}
FINAL=$OUT; OUT=/tmp/results; mkdir -p $OUT
trap 'tar -C /tmp -czf $FINAL/results.tar.gz results' EXIT
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt
M=/tmp/q06
python3 scripts/accuracy.py make $M > $OUT/make.log 2>&1
$BIN inspect $M > $OUT/inspect.txt 2>&1; echo "inspect exit $?" >> $OUT/inspect.txt
P1="It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."
P2="Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse,"
P3="def fibonacci(n):
    if n < 2:
        return n
    return"
for dt in bfloat16 float32; do
  python3 scripts/hf_dump.py $M --prompt "$P1" --dtype $dt --new-tokens 64 --device cuda --out /tmp/hf-$dt.safetensors 2>&1 | grep -v Loading | tee -a $OUT/hf_dump.log
done
{
  echo "\$ braid-cli diff --model \$M --device cuda --truth-device $TRUTH --dtype bf16 --against hf-bfloat16.safetensors --new-tokens 64 --taps"
  timeout 200 $BIN diff --model $M --device cuda --truth-device $TRUTH --dtype bf16 --against /tmp/hf-bfloat16.safetensors --new-tokens 64 --taps 2>&1
  echo "exit $?"
} > $OUT/diff-bf16.txt
timeout 150 $BIN diff --model $M --device cuda --truth-device $TRUTH --dtype bf16 --against /tmp/hf-float32.safetensors --new-tokens 64 --format json > /tmp/diff-f32.json 2>$OUT/diff-f32.err
TRUTH=$TRUTH python3 - <<'PY' > $OUT/diff-f32-summary.txt
import json
r = json.load(open("/tmp/diff-f32.json"))
hf = r["paths"][-1]
worst = max(hf["taps"], key=lambda t: t["rel_err"])
print(hf["name"], "vs Braid f32 reference (truth device %s):" % __import__("os").environ.get("TRUTH"), len(hf["taps"]), "taps; worst", worst["name"], "%.3e" % worst["rel_err"],
      "; logits max-abs %.3e; greedy agree %s/64" % (hf["logits_max_abs"], hf["greedy_agree"]))
PY
cat $OUT/diff-f32-summary.txt
{
  echo "\$ braid-cli diff --device cuda --truth-device $TRUTH --dtype bf16 --prompt P1 --prompt P2 --prompt P3 --write-plan plan.json"
  timeout 150 $BIN diff --model $M --device cuda --truth-device $TRUTH --dtype bf16 --prompt "$P1" --prompt "$P2" --prompt "$P3" --new-tokens 16 --write-plan $OUT/auto-plan.json 2>&1 | tail -12
} > $OUT/write-plan.txt
OUT=$OUT python3 - <<'PY' >> $OUT/write-plan.txt
import json, collections
p = json.load(open(__import__("os").environ["OUT"] + "/auto-plan.json"))
c = p["calibration"]
print("estimated decode us/token:", json.dumps(c["estimated_decode_us"]))
print("op times us (decode shape):")
for op, t in c["measured"]["times_us"].items():
    print("  %-13s" % op, "  ".join("%s %.1f" % kv for kv in t.items()))
cnt = collections.Counter((o["op"], o["chosen"]) for o in c["measured"]["ops"])
print("choices:", dict(cnt))
for o in c["measured"]["ops"][:7]:
    print("  layer", o["layer"], o["op"], {k: "%.3e" % v for k, v in o["errors"].items()}, "->", o["chosen"])
PY
cat $OUT/write-plan.txt
export BRAID_CACHE_DIR=/tmp/braid-cache
PG="The history of the city begins with"
{
  for plan in auto fused fused-f32 reference $OUT/auto-plan.json; do
    echo "== --plan $(basename $plan)"
    for i in 1 2 3; do
      $BIN generate --model $M --device cuda --dtype bf16 --prompt "$PG" --max-tokens 128 --ignore-eos --temperature 0 --plan $plan 2>&1 >/dev/null | grep -E "plan auto|decode"
    done
  done
} > $OUT/generate-plans.txt
cat $OUT/generate-plans.txt
tail -8 $OUT/diff-bf16.txt
