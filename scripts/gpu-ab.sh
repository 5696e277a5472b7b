#!/usr/bin/env bash
# One device call (issue 6): the same binary with a switch on and off, per benchmark, in one
# process per run (CubeCL's caches warm from the first). Builds nothing: carry dist/.
#   AB_RUNS   `;`-separated runs `ENV=.. ENV=..|parts|plans`: parts among kernels latency
#             throughput, plans comma-separated (presets or plan files).
#             Default: the new decode paths on (everything, both plans), the split attention's
#             direct key reads (kernels, throughput), the separate KV write (latency, throughput)
#   AB_CHECK  0 skips check-kernels; AB_TORCH=1 runs PyTorch's cuBLAS matmuls at AB_ROWS first
#   AB_KERNEL_ARGS  flags for `bench kernels` (default --no-matmul)
# Results: $OUT/results.tar.gz (ab-*.txt, JSON), a summary table printed last.
source scripts/gpu-setup.sh
DEFAULT='BRAID_SPLIT_STAGE=1|kernels latency throughput|fused,fused-attn-f32;BRAID_SPLIT_STAGE=0|kernels throughput|fused;BRAID_KV_WRITE_FUSED=0|latency throughput|fused'
IFS=';' read -ra runs <<< "${AB_RUNS:-$DEFAULT}"
if [ "${AB_CHECK:-1}" != 0 ]; then
  $BIN check-kernels --device cuda --dtype bf16 > $OUT/check-kernels.txt 2>&1; echo "check-kernels exit $?" >> $OUT/check-kernels.txt
  echo "check-kernels: $(grep -cE ' ok$' $OUT/check-kernels.txt) ok"; grep -E "FAIL|exit" $OUT/check-kernels.txt
fi
if [ "${AB_TORCH:-0}" = 1 ]; then
  timeout 120 python3 scripts/torch_kernels.py --rows ${AB_ROWS:-1,64,256} --iters 20 --json $OUT/torch-kernels.json > $OUT/torch-kernels.txt 2>&1
  grep -iE "matmul|qkv|o_proj|gate|down|lm_head" $OUT/torch-kernels.txt | head -30
fi
i=0
for run in "${runs[@]}"; do
  IFS='|' read -r e PARTS planlist <<< "$run"
  has() { [[ " $PARTS " == *" $1 "* ]]; }
  IFS=',' read -ra plans <<< "$planlist"
  i=$((i+1)); echo "== run $i: $e ($PARTS)" | tee -a $OUT/summary.txt
  if has kernels; then
    env $e timeout 200 $BIN bench kernels --device cuda --dtype bf16 --rows ${AB_ROWS:-1,64,256} --iters 20 ${AB_KERNEL_ARGS---no-matmul} \
      --json $OUT/ab-kernels-$i.json > $OUT/ab-kernels-$i.txt 2>&1
    grep -E "paged_attn|attention|qk_norm_rope|^(qkv|q|o_proj|gate|down|lm_head) " $OUT/ab-kernels-$i.txt | head -40 | tee -a $OUT/summary.txt
  fi
  for p in "${plans[@]}"; do
    tag=$i-$(basename $p .json)
    if has latency; then
      env $e timeout 200 $BIN bench latency --model $M --device cuda --dtype bf16 --plan $p --runs 3 --json $OUT/ab-latency-$tag.json \
        > $OUT/ab-latency-$tag.txt 2>&1
      echo "latency $p: $(grep -E 'graph replay|graph, streamed' $OUT/ab-latency-$tag.txt | head -2 | tr '\n' ' ')" | tee -a $OUT/summary.txt
    fi
    if has throughput; then
      env $e timeout 200 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan $p --json $OUT/ab-throughput-$tag.json \
        > $OUT/ab-throughput-$tag.txt 2>&1
      echo "throughput $p: $(grep -E 'output tok/s|prefill [0-9]+ steps|decode [0-9]+ steps' $OUT/ab-throughput-$tag.txt | tr '\n' ' ')" | tee -a $OUT/summary.txt
    fi
  done
done
echo; echo "== summary"; cat $OUT/summary.txt
