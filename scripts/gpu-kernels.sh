#!/usr/bin/env bash
# One device call (issue 6): every fused kernel checked, then timed host-driven, replayed as a
# CUDA graph (device time) and against its twin, at the 0.6B shapes (rows 1 / 16 / 512).
# Carry dist/ (CUDA braid-cli).
set -uo pipefail
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt
$BIN check-kernels --device cuda --dtype bf16 --bench --iters 50 > $OUT/kernels-bf16.txt 2>&1
echo "check-kernels exit $?: $(grep -cE ' ok$' $OUT/kernels-bf16.txt) ok, $(grep -c FAIL $OUT/kernels-bf16.txt) FAIL"
grep -A40 "^bench:" $OUT/kernels-bf16.txt
