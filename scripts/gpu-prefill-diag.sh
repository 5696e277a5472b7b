#!/usr/bin/env bash
# One device call (issue 6): where layer 0's add+RMSNorm+QKV phase of each prefill step spends
# ~200 ms (BRAID_PROFILE=layers, 2026-11-26). `bench throughput` on nano-vllm's workload, each
# run in its own folder with its own cubecl.toml: CubeCL's memory and autotune logs under the
# per-layer profile, then CUDA's synchronous and stream-ordered allocators. Builds nothing:
# carry dist/ (CUDA braid-cli). RUNS picks the runs (logs, sync, async, async-profile, profile, trace);
# TP_ARGS adds flags to every run, TAG names the profile run's files.
source scripts/gpu-setup.sh
run() { # name, cubecl.toml body, BRAID_PROFILE value
  local d=/tmp/run-$1; mkdir -p $d; printf '%s\n' "$2" > $d/cubecl.toml
  (cd $d && BRAID_PROFILE=${3:-0} timeout 240 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused \
    ${TP_ARGS:-} --json $OUT/tp-$1.json > $OUT/tp-$1.txt 2>&1)
  echo "== $1: $(grep -E 'output tok/s' $OUT/tp-$1.txt)"; grep -E "prefill [0-9]+ steps" $OUT/tp-$1.txt
  grep -E "^profile prefill/(L00|L01|pick|inputs)" $OUT/tp-$1.txt
}
LOGS='[memory.logger]
level = "basic"
file = "/tmp/results/memory.log"
[autotune.logger]
level = "full"
file = "/tmp/results/autotune.log"'
# Compiled kernels and tuned keys on stderr, in order with the profile's slow phases.
TRACE='[compilation.logger]
level = "basic"
stderr = true
[autotune.logger]
level = "minimal"
stderr = true'
ASYNC='[memory.cuda]
allocator = "async"'
for r in ${RUNS:-logs sync async async-profile}; do
  case $r in
    logs) run logs "$LOGS" layers; wc -l $OUT/memory.log $OUT/autotune.log 2>/dev/null ;;
    sync) run sync "" ;;
    async) run async "$ASYNC" ;;
    async-profile) run async-profile "$ASYNC" layers ;;
    profile) run profile${TAG:-} "" layers ;;
    trace) run trace "$TRACE" layers; grep -B3 "slow phase" $OUT/tp-trace.txt | cut -c1-200 | head -60 ;;
  esac
done
