#!/usr/bin/env bash
# One device call (issue 6): the persistent decode MLP launch (`braid_kernels::decode_mlp`,
# and `decode_mlp_qkv` running on into the next layer's q/k/v): its checks in bf16 and f16,
# then batch-1 latency with it off and on (and its knobs), each run in its own process,
# alternating. Builds nothing: carry dist/.
#   MLP_RUNS  `;`-separated env settings, one latency run each (default below)
#   MLP_DTYPES  check dtypes (default bf16 f16; empty: none); MLP_GRID=0 skips the grid-barrier probe
#   MLP_CHECKS  check groups (default decode_mlp decode_mlp_qkv); MLP_CHECK_ENV  env settings for them
#   MLP_CHECK_ENV2  env settings for a second pass of the checks (bf16 only), if set
# Results: $OUT/results.tar.gz (mlp-*.txt, JSON), a summary printed last.
source scripts/gpu-setup.sh
DEFAULT='BRAID_DECODE_MLP_QKV=0;BRAID_DECODE_MLP_QKV=1;BRAID_DECODE_MLP_D_EARLY=1;BRAID_DECODE_MLP_QKV=0;BRAID_DECODE_MLP_QKV=1'
only=""
for g in ${MLP_CHECKS:-decode_mlp decode_mlp_qkv}; do only="$only --only $g"; done
for dt in ${MLP_DTYPES-bf16 f16}; do
  env ${MLP_CHECK_ENV:-BRAID_CHECK=1} timeout 150 $BIN check-kernels --device cuda --dtype $dt $only > $OUT/check-mlp-$dt.txt 2>&1
  echo "exit $?" >> $OUT/check-mlp-$dt.txt
  echo "check ${MLP_CHECKS:-decode_mlp decode_mlp_qkv} $dt: $(grep -cE ' ok$' $OUT/check-mlp-$dt.txt) ok" | tee -a $OUT/summary.txt
  grep -vE ' ok$' $OUT/check-mlp-$dt.txt | tail -n +2 | head -20 | tee -a $OUT/summary.txt
done
if [ -n "${MLP_CHECK_ENV2:-}" ]; then
  env $MLP_CHECK_ENV2 timeout 150 $BIN check-kernels --device cuda --dtype bf16 $only > $OUT/check-mlp-env2.txt 2>&1
  echo "exit $?" >> $OUT/check-mlp-env2.txt
  echo "check ($MLP_CHECK_ENV2) bf16: $(grep -cE ' ok$' $OUT/check-mlp-env2.txt) ok" | tee -a $OUT/summary.txt
  grep -vE ' ok$' $OUT/check-mlp-env2.txt | tail -n +2 | head -20 | tee -a $OUT/summary.txt
fi
if [ "${MLP_GRID:-1}" = 1 ]; then
  timeout 120 $BIN bench kernels --device cuda --dtype bf16 --rows 1 --grid-barrier-only > $OUT/grid-barrier.txt 2>&1
  grep -E "grid barrier|rror" $OUT/grid-barrier.txt | tee -a $OUT/summary.txt
fi
IFS=';' read -ra runs <<< "${MLP_RUNS:-$DEFAULT}"
i=0
for e in "${runs[@]}"; do
  i=$((i+1))
  env $e timeout 150 $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --runs 3 --json $OUT/mlp-latency-$i.json \
    > $OUT/mlp-latency-$i.txt 2>&1
  echo "run $i ($e): $(grep -E 'graph replay|streamed|identical|rror|panic' $OUT/mlp-latency-$i.txt | head -4 | tr '\n' ' ')" | tee -a $OUT/summary.txt
done
echo; echo "== summary"; cat $OUT/summary.txt
