#!/usr/bin/env bash
# One device call (issue 5): `braid-cli inspect` and `braid-cli diff` on the random
# Qwen3-0.6B-shaped extreme-k_norm model of scripts/accuracy.py. Carry dist/ (CUDA braid-cli).
set -uo pipefail
export PYTHONUNBUFFERED=1
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt
M=/tmp/q06
python3 scripts/accuracy.py make $M > $OUT/make.log 2>&1
$BIN inspect $M > $OUT/inspect.txt 2>&1; echo "inspect exit $?" >> $OUT/inspect.txt
head -45 $OUT/inspect.txt
PROMPT="It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."
$BIN diff --model $M --device cuda --dtype bf16 --prompt "$PROMPT" --new-tokens 64 2>&1 | tee $OUT/diff.txt
