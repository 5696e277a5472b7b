#!/usr/bin/env bash
# One device call (issue 4): kernel checks and timings on CUDA, then the accuracy proof on a
# random Qwen3-0.6B-shaped model with extreme k_norm weights. Carry dist/ (the CUDA braid-cli,
# xz, built here with scripts/setup-llvm.sh && CUDARC_CUDA_VERSION=13000 cargo build --profile gpu
# -p braid-cli --features cuda; and dist/qwen3-tokenizer/). Logs and tables go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
NEW=${NEW:-256}
BIN=/tmp/braid-cli
xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt

for dt in bf16 f32; do
  $BIN check-kernels --device cuda --dtype $dt 2>&1 | tee $OUT/check-kernels-$dt.log
done

M=/tmp/q06
python3 scripts/accuracy.py make $M 2>&1 | tee $OUT/make.log
python3 scripts/accuracy.py hf $M f32 $NEW $OUT/hf-f32 2>&1 | tee $OUT/hf.log
python3 scripts/accuracy.py hf $M bf16 $NEW $OUT/hf-bf16 2>&1 | tee -a $OUT/hf.log
for plan in reference fused fused-f32; do
  /usr/bin/time -f "braid $plan: %e s" $BIN dump --model $M --ids $M/ids.json --plan $plan --device cuda --dtype bf16 \
    --new-tokens $NEW --out $OUT/braid-$plan 2>&1 | tail -5 | tee -a $OUT/braid.log
done
python3 scripts/accuracy.py compare $OUT 2>&1 | tee $OUT/compare.log
rm -f $OUT/*.safetensors
# The device tool returns at most 8 files: everything in one archive, the tables beside it.
cd $OUT && tar czf results.tgz --exclude=results.tgz * && find . -maxdepth 1 -type f ! -name results.tgz ! -name accuracy.md ! -name compare.log -delete
