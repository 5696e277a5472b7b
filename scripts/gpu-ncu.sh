#!/usr/bin/env bash
# One device call (issue 6): Nsight Compute on Braid's decode-shape kernels, to see what limits
# them (DRAM throughput, L1/L2 traffic, occupancy, stalls) where timings alone cannot say.
# Builds nothing: carry dist/ (CUDA braid-cli). NCU_RUNS: `rows:regex:skip:count` entries,
# each a `bench kernels --rows rows` pass with the full sections on the matching launches
# (default: the paged decode attention's kernels at 256 rows x 1,024 keys, both modes; NCU_RUNS= none).
source scripts/gpu-setup.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Chart --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats"
i=0
for run in ${NCU_RUNS-256:^(chunk_kernel|value_kernel|combine_kernel):0:60}; do
  IFS=: read -r rows regex skip count <<< "$run"; i=$((i+1))
  timeout 280 $NCU --clock-control none $SECTIONS -k "regex:$regex" --launch-skip $skip --launch-count $count \
    $BIN bench kernels --device cuda --dtype bf16 --rows $rows --iters 2 --no-matmul > $OUT/ncu-$i.txt 2>&1
  echo "== run $i ($run): exit $?"
  grep -E '^  [A-Za-z_0-9]+.*Context' $OUT/ncu-$i.txt | awk '{print $1,$2,$3,$4}' | uniq -c
  grep -E '^  [A-Za-z_0-9]+.*Context|    Duration|DRAM Throughput|L1/TEX Hit|L2 Hit|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Block Limit Shared' $OUT/ncu-$i.txt \
    | head -60
done
# NCU_DECODE=1: the batch-1 layer launch (`decode_mlp`) inside `bench latency`'s device-state steps
# instead: registers, local-memory (spill) traffic, warp stalls and the stall hot spots.
if [ "${NCU_DECODE:-0}" = 1 ]; then
  LOCAL="--metrics l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum,l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum,launch__registers_per_thread,launch__shared_mem_per_block_dynamic,launch__shared_mem_per_block_static"
  for extra in "$LOCAL --section SourceCounters" ""; do
    timeout 280 $NCU --clock-control none $SECTIONS $extra -k "regex:${NCU_KERNEL:-decode_mlp}" --launch-skip ${NCU_SKIP:-60} --launch-count ${NCU_COUNT:-2} \
      $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --runs 1 --new-tokens 16 --ways ${NCU_WAYS:-steps} > $OUT/ncu-decode.txt 2>&1
    rc=$?; echo "== decode ($extra): exit $rc"
    [ $rc = 0 ] && break
  done
  grep -E '^  [A-Za-z_0-9]+.*Context|    Duration|DRAM Throughput|Registers Per|local_op|shared_mem|Warp Cycles Per Issued|Stall|Block Limit|Achieved Occ' $OUT/ncu-decode.txt | head -80
fi
