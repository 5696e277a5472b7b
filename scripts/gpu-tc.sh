#!/usr/bin/env bash
# One device call (issue 6): the tensor-core projections (`braid_kernels::tc_linear`), its
# mma.sync kernel against the cooperative-matrix one ($BRAID_TC_MMA=0) in one call: the linear
# and QKV checks in bf16 and f16, PyTorch's cuBLAS at the same shapes, `bench kernels
# --matmul-only` per switch, and the nano-vllm throughput workload per switch.
#   TC_ENVS   `;`-separated env settings to compare (default: "BRAID_TC_MMA=0;BRAID_TC_MMA=1": the mma kernel never / always)
#   TC_ROWS   row counts (default 64,256,4096); TC_TORCH=0 skips PyTorch; TC_CHECK=0 skips checks
#   TC_KERNEL_ARGS  the `bench kernels` section flag (default --matmul-only; --paths-only: the
#             GEMV-vs-matmul paths of the GEMV-capable ops, where their row limits should sit)
#   TC_GROUPS check-kernels groups (default linear,rms_norm_qkv,gate_up_silu); TC_DTYPES (bf16 f16)
#   TC_TPUT   1 runs the throughput workload (default 0) per setting of TC_TPUT_ENVS
#             (`;`-separated; default "BRAID_TC_MMA=0;BRAID_TC_MMA_ROWS=256": never / the
#             default thresholds); TC_PLAN (default fused)
#   TC_NCU    a kernel-name regex: Nsight Compute on its first launches at TC_NCU_ROWS (4096) rows
#             under the first setting
# Builds nothing: carry dist/. Results: $OUT/results.tar.gz, a summary printed last.
source scripts/gpu-setup.sh
ROWS=${TC_ROWS:-64,256,4096}
IFS=';' read -ra envs <<< "${TC_ENVS:-BRAID_TC_MMA=0;BRAID_TC_MMA=1}"
if [ "${TC_CHECK:-1}" != 0 ]; then
  for dt in ${TC_DTYPES:-bf16 f16}; do
    $BIN check-kernels --device cuda --dtype $dt --only ${TC_GROUPS:-linear,rms_norm_qkv,gate_up_silu} \
      > $OUT/check-$dt.txt 2>&1; echo "exit $?" >> $OUT/check-$dt.txt
    echo "check $dt: $(grep -cE ' ok$' $OUT/check-$dt.txt) ok; $(grep -E 'FAIL|exit' $OUT/check-$dt.txt | tr '\n' ' ')" | tee -a $OUT/summary.txt
  done
  # A failed check ends the call (the timings of a wrong kernel are not worth the device time).
  if grep -qE 'FAIL|exit [1-9]' $OUT/check-*.txt; then grep -E 'FAIL|rror' $OUT/check-*.txt | head -20; exit 1; fi
fi
if [ "${TC_TORCH:-1}" != 0 ]; then
  timeout 120 python3 scripts/torch_kernels.py --rows $ROWS --iters 20 --json $OUT/torch-kernels.json > $OUT/torch-kernels.txt 2>&1
  grep -iE "TFLOP|^(qkv|q|o_proj|gate|down|lm_head) " $OUT/torch-kernels.txt | tee -a $OUT/summary.txt
fi
if [ -n "${TC_NCU:-}" ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis --section SchedulerStats"
  env ${envs[0]} timeout 240 $NCU --clock-control none $SECTIONS -k "regex:$TC_NCU" --launch-count ${TC_NCU_COUNT:-2} \
    $BIN bench kernels --device cuda --dtype bf16 --rows ${TC_NCU_ROWS:-4096} --iters 2 --matmul-only > $OUT/tc-ncu.txt 2>&1
  echo "ncu exit $?" | tee -a $OUT/summary.txt
  grep -E 'Context|    Duration|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|Local|Bank|bank|Executed Ipc|Stall|Dynamic Shared|Static Shared' $OUT/tc-ncu.txt | head -80 | tee -a $OUT/summary.txt
fi
i=0
for e in "${envs[@]}"; do
  i=$((i+1)); echo "== $i: $e" | tee -a $OUT/summary.txt
  env $e timeout 200 $BIN bench kernels --device cuda --dtype bf16 --rows $ROWS --iters 20 ${TC_KERNEL_ARGS:---matmul-only} \
    --json $OUT/tc-kernels-$i.json > $OUT/tc-kernels-$i.txt 2>&1
  grep -E "^(qkv|q|o_proj|gate|down|lm_head|rms_norm_qkv|gate_up_silu|linear) |rror" $OUT/tc-kernels-$i.txt | tee -a $OUT/summary.txt
done
IFS=';' read -ra tenvs <<< "${TC_TPUT_ENVS:-BRAID_TC_MMA=0;BRAID_TC_MMA_ROWS=256}"
for e in "${tenvs[@]}"; do
  i=$((i+1))
  if [ "${TC_TPUT:-0}" = 1 ]; then
    echo "== $i: $e" | tee -a $OUT/summary.txt
    env $e timeout 200 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan ${TC_PLAN:-fused} \
      --json $OUT/tc-throughput-$i.json > $OUT/tc-throughput-$i.txt 2>&1
    echo "throughput: $(grep -E 'output tok/s|prefill [0-9]+ steps|decode [0-9]+ steps|rror' $OUT/tc-throughput-$i.txt | tr '\n' ' ')" | tee -a $OUT/summary.txt
  fi
done
echo; echo "== summary"; cat $OUT/summary.txt
