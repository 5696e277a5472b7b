#!/usr/bin/env bash
# One device call (issue 6): where each GEMV-capable op should hand over to Burn's autotuned
# matmul. `bench kernels` times every op on both paths at decode batch sizes, then
# `bench throughput` runs nano-vllm's workload under each row-limit setting in LIMITS
# (BRAID_GEMV_MAX_ROWS values; "default" = the built-in limits). check-kernels first.
# Builds nothing: carry dist/ (CUDA braid-cli).
source scripts/gpu-setup.sh
$BIN check-kernels --device cuda --dtype bf16 > $OUT/check-kernels.txt 2>&1; echo "check-kernels exit $?" >> $OUT/check-kernels.txt
echo "check-kernels: $(grep -cE ' ok$' $OUT/check-kernels.txt) ok"; grep -E "FAIL|exit" $OUT/check-kernels.txt
timeout 300 $BIN bench kernels --device cuda --dtype bf16 --rows ${ROWS:-1,2,4,8,16,32,64,128,256} --iters 20 --no-matmul \
  --json $OUT/kernels.json > $OUT/kernels.txt 2>&1
grep -E "^(paged_attention|attention) " $OUT/kernels.txt; sed -n '/^GEMV kernel vs/,$p' $OUT/kernels.txt
for lim in ${LIMITS:-default}; do
  if [ "$lim" = default ]; then unset BRAID_GEMV_MAX_ROWS; else export BRAID_GEMV_MAX_ROWS=$lim; fi
  echo "== limits $lim" | tee $OUT/throughput-$lim.txt
  timeout 240 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused --json $OUT/throughput-$lim.json 2>&1 \
    | grep -v "^\s*$" | tail -3 | tee -a $OUT/throughput-$lim.txt
done
if [ -n "${PROFILE:-}" ]; then
  # Where the prefill steps' time goes (BRAID_PROFILE syncs after every phase: slower overall).
  BRAID_PROFILE=1 timeout 240 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused 2>&1 \
    | grep -E "profile|output tok/s" | tee $OUT/profile.txt
fi
