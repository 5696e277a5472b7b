#!/usr/bin/env bash
# One device call (issue 6): where a batch-1 decode step's time goes, kernel by kernel.
# Nsight Compute times every launch of a short `bench latency --ways steps` run (device-state
# steps run eagerly: the same kernels the graph replays), with the L2 flushed before each
# launch (weights come from HBM, as in a real step); scripts/step_profile.py folds the last
# step's launches into a per-kernel table (us, bytes, GB/s against the card's copy rate) and
# the sum is set against the replayed graph's ms/token from the same binary. (The profiled steps
# run at ~PROMPT cached positions, the graph's over PROMPT..PROMPT+256: the attention grows with
# the length, 0.55 us a step per position on an H100, 2026-11-27, so the sum comes out below the
# graph's step; gpu-layers.sh's NCU_PROMPTS times the layers' launch at other lengths.) Builds nothing:
# carry dist/ (CUDA braid-cli). PLAN (default fused), PROMPT (128), CHECK=0 skips check-kernels,
# TP=1 also runs the throughput workload once (`fused-attn-f32`), GEMV_CHECK=0 skips checking
# each GEMV candidate, LAT_ENVS adds graph-latency runs under other env settings (A/B),
# NCU_CACHE=none keeps L2 between the profiled launches (default all: flushed), PROFILE=0 skips ncu,
# LAT=0 the main latency run, WAYS its ways (default steps,graph; eager,steps,graph also checks
# the graph step's tokens against the eager forward).
source scripts/gpu-setup.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
PLAN=${PLAN:-fused}; PROMPT=${PROMPT:-128}
if [ "${CHECK:-1}" != 0 ]; then
  $BIN check-kernels --device cuda --dtype bf16 > $OUT/check-kernels.txt 2>&1; echo "check-kernels exit $?" >> $OUT/check-kernels.txt
  echo "check-kernels: $(grep -cE ' ok$' $OUT/check-kernels.txt) ok"; grep -E "FAIL|exit" $OUT/check-kernels.txt
fi
if [ "${GEMV_CHECK:-1}" != 0 ]; then  # every GEMV candidate against f64 and the twin
  for c in plane-1 plane-2 plane-4 plane-8 plane-16 unit; do
    BRAID_GEMV=$c $BIN check-kernels --device cuda --dtype bf16 --only rms_norm_qkv,linear,gate_up_silu,add_rms_norm_qkv,add_rms_norm_gate_up > $OUT/check-gemv-$c.txt 2>&1
    echo "gemv $c: exit $? $(grep -cE ' ok$' $OUT/check-gemv-$c.txt) ok"; grep FAIL $OUT/check-gemv-$c.txt | head -3
  done
fi
# LAT_ENVS: `;`-separated env settings, each a graph-replay latency run before the main one.
IFS=';' read -ra envs <<< "${LAT_ENVS:-}"
for e in "${envs[@]}"; do
  echo "== $e"; env $e timeout 120 $BIN bench latency --model $M --device cuda --dtype bf16 --plan $PLAN --prompt-len $PROMPT --ways graph --runs 3 2>&1 | tail -2 | head -1
done
[ "${LAT:-1}" != 0 ] && timeout 200 $BIN bench latency --model $M --device cuda --dtype bf16 --plan $PLAN --prompt-len $PROMPT --ways ${WAYS:-steps,graph} --runs 3 2>&1 | tail -6 | tee $OUT/latency.txt
if [ "${TP:-0}" != 0 ]; then  # the throughput workload once, for its host/device split
  timeout 150 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused-attn-f32 2>&1 | grep -v "^\s*$" | tail -12 | tee $OUT/throughput.txt
fi
if [ "${PROFILE:-1}" != 0 ]; then
  timeout ${NCU_TIMEOUT:-330} $NCU --clock-control none --cache-control ${NCU_CACHE:-all} --csv --page raw --print-units base \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size \
    $BIN bench latency --model $M --device cuda --dtype bf16 --plan $PLAN --prompt-len $PROMPT --ways steps --runs 1 --new-tokens 4 \
    > $OUT/ncu-step.csv 2> $OUT/ncu-step.err
  echo "ncu exit $? ($(wc -l < $OUT/ncu-step.csv) lines)"
  python3 scripts/step_profile.py $OUT/ncu-step.csv $OUT/latency.txt | tee $OUT/step-profile.txt
fi
