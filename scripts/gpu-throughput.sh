#!/usr/bin/env bash
# One device call (issue 6): the batch engine on the random Qwen3-0.6B-shaped model
# (scripts/accuracy.py make): check-kernels (paged ops included), `bench throughput` on
# nano-vllm's workload (256 sequences, lengths uniform in 100..1024, seeded, eos ignored),
# HF transformers' static-batch throughput on the first sequences of the same workload, and
# batch-1 latency as a regression check. Builds nothing: carry dist/ (CUDA braid-cli).
source scripts/gpu-setup.sh
if [ -z "${SKIP_CHECK:-}" ]; then
  # The checks, then each op's device time at decode batch sizes (paged attention at 1,024 keys).
  $BIN check-kernels --device cuda --dtype bf16 > $OUT/check-kernels.txt 2>&1
  echo "check-kernels exit $?" >> $OUT/check-kernels.txt
  grep -cE " ok$" $OUT/check-kernels.txt; grep -E "FAIL|exit" $OUT/check-kernels.txt
  $BIN bench kernels --device cuda --dtype bf16 --rows ${BENCH_ROWS:-1,64,256} --iters 20 --no-matmul 2>&1 | tee $OUT/bench-kernels.txt
fi
# Each run: PLAN or PLAN:EXTRA-FLAG (e.g. fused:--no-graphs, every decode step eager).
for run in ${RUNS:-fused fused:--no-graphs fused-f32}; do
  plan=${run%%:*}; extra=""; [ "$run" != "$plan" ] && extra=${run#*:}
  name=$(echo "$run" | tr -d ':' | sed 's/--/-/g')
  echo "== bench throughput --plan $plan $extra ${TP_ARGS:-}" | tee $OUT/throughput-$name.txt
  timeout ${TP_TIMEOUT:-240} $BIN bench throughput --model $M --device cuda --dtype bf16 --plan $plan $extra ${TP_ARGS:-} \
    --save-workload $OUT/workload.json --json $OUT/throughput-$name.json 2>&1 | grep -v "^\s*$" | tail -40 | tee -a $OUT/throughput-$name.txt
done
if [ -n "${HF_SEQS:-}" ]; then
  timeout ${HF_TIMEOUT:-150} python3 scripts/hf_throughput.py $M $OUT/workload.json --seqs $HF_SEQS --batch ${HF_BATCH:-64} 2>&1 | grep -v Loading | tail -2 | tee $OUT/hf-throughput.json
fi
if [ -n "${LATENCY:-}" ]; then
  timeout 120 $BIN bench latency --model $M --device cuda --dtype bf16 --plan fused --runs 3 --json $OUT/latency.json 2>&1 | tail -8 | tee $OUT/latency.txt
fi
# The batch engine behind `generate`: three prompts at once.
$BIN generate --model $M --device cuda --dtype bf16 --plan fused --prompt "The river" --prompt "A history of" --prompt "In the year" \
  --max-tokens 32 --ignore-eos --temperature 0 --repetition-penalty 1 2>&1 | tail -1 | tee $OUT/generate-batch.txt
rm -f $OUT/workload.json
