#!/usr/bin/env bash
# One device call (issue 6): CubeCL's two CUDA code generators side by side, the same source
# built twice here: braid-cli-llvm (`--features cuda`: CubeCL IR -> LLVM -> NVPTX) and
# braid-cli-cpp (`--features cuda-cpp`: CubeCL IR -> CUDA C++ -> NVRTC), carried as one tarball
# (two xz files do not fit the 64 MiB a call carries; one xz stream with a dictionary larger
# than a binary stores the second as matches against the first: 36 MB for both):
#   tar -C DIR -cf - braid-cli-llvm braid-cli-cpp | xz -T1 --lzma2=preset=6,dict=320MiB > dist/braid-cli-both.tar.xz
# with dist/qwen3-tokenizer.tar.xz (see gpu-setup.sh) and no dist/braid-cli.xz.
#   BK_PARTS   among latency kernels throughput (default "latency kernels")
#   BK_ROUNDS  latency rounds, alternating the binaries (default 2)
#   BK_ROWS    rows for `bench kernels --matmul-only` (default 64,256,4096)
#   BK_GROUPS  check-kernels groups (comma-separated) to run last, one process each, with the
#              binaries in BK_CHECK_BINS (default cpp); BK_GROUP_TIMEOUT seconds each (150)
# Builds nothing: carry dist/. Results: $OUT/results.tar.gz, a summary printed last.
source scripts/gpu-setup.sh
tar -C /tmp -xJf dist/braid-cli-both.tar.xz
BIN=/tmp/braid-cli-llvm CPP=/tmp/braid-cli-cpp
PARTS=" ${BK_PARTS:-latency kernels} "
declare -A bins=([llvm]=$BIN [cpp]=$CPP)
if [[ $PARTS == *" latency "* ]]; then
  for r in $(seq 1 ${BK_ROUNDS:-2}); do
    for b in llvm cpp; do
      t0=$SECONDS
      timeout 200 ${bins[$b]} bench latency --model $M --device cuda --dtype bf16 --plan fused --runs 3 \
        --json $OUT/latency-$b-$r.json > $OUT/latency-$b-$r.txt 2>&1
      echo "latency $b round $r ($((SECONDS - t0)) s): $(grep -E 'graph replay|rror' $OUT/latency-$b-$r.txt | head -2 | tr '\n' ' ')" | tee -a $OUT/summary.txt
    done
  done
fi
if [[ $PARTS == *" kernels "* ]]; then
  for b in llvm cpp; do
    timeout 200 ${bins[$b]} bench kernels --device cuda --dtype bf16 --rows ${BK_ROWS:-64,256,4096} --iters 20 --matmul-only \
      --json $OUT/kernels-$b.json > $OUT/kernels-$b.txt 2>&1
    echo "== kernels $b" | tee -a $OUT/summary.txt
    grep -E "^(qkv|q|o_proj|gate|down|lm_head) |rror" $OUT/kernels-$b.txt | tee -a $OUT/summary.txt
  done
fi
if [[ $PARTS == *" throughput "* ]]; then
  for b in llvm cpp; do
    timeout 240 ${bins[$b]} bench throughput --model $M --device cuda --dtype bf16 --plan fused \
      --json $OUT/throughput-$b.json > $OUT/throughput-$b.txt 2>&1
    echo "throughput $b: $(grep -E 'output tok/s|prefill [0-9]+ steps|decode [0-9]+ steps|rror' $OUT/throughput-$b.txt | tr '\n' ' ')" | tee -a $OUT/summary.txt
  done
fi
# Last: the C++ backend compiles each kernel with NVRTC, slower than LLVM (a full check-kernels
# did not finish in 330 s on a fresh machine, 2026-11-27), so one group per process, each timed.
if [ -n "${BK_GROUPS:-}" ]; then
  IFS=',' read -ra groups <<< "$BK_GROUPS"
  for b in ${BK_CHECK_BINS:-cpp}; do
    for g in "${groups[@]}"; do
      t0=$SECONDS
      timeout ${BK_GROUP_TIMEOUT:-150} ${bins[$b]} check-kernels --device cuda --dtype bf16 --only $g > $OUT/check-$b-$g.txt 2>&1
      echo "exit $?" >> $OUT/check-$b-$g.txt
      echo "check $b $g: $(grep -cE ' ok$' $OUT/check-$b-$g.txt) ok, $((SECONDS - t0)) s; $(grep -E 'FAIL|exit|rror' $OUT/check-$b-$g.txt | head -5 | tr '\n' ' ')" | tee -a $OUT/summary.txt
    done
  done
fi
echo; echo "== summary"; cat $OUT/summary.txt
