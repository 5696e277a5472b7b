#!/usr/bin/env bash
# One device call (issue 4): kernel checks on CUDA (CHECK=0 skips them), then the accuracy proof
# on the random Qwen3-0.6B-shaped model with extreme k_norm weights of scripts/accuracy.py: HF
# float32 (the truth) and bf16, Braid's reference, fused and fused-f32 plans, compared layer by
# layer (docs/accuracy.md). Builds nothing: carry dist/ (the CUDA braid-cli, xz, and
# dist/qwen3-tokenizer/). Results come back as $OUT/results.tar.gz (scripts/gpu-setup.sh), with
# accuracy.md / compare.log in it.
source scripts/gpu-setup.sh
NEW=${NEW:-256}
if [ "${CHECK:-1}" != 0 ]; then
  for dt in bf16 f32; do
    $BIN check-kernels --device cuda --dtype $dt > $OUT/check-kernels-$dt.log 2>&1
    echo "check-kernels $dt: exit $? $(grep -cE ' ok$' $OUT/check-kernels-$dt.log) ok"; grep FAIL $OUT/check-kernels-$dt.log | head -5
  done
fi
A=$OUT/accuracy; mkdir -p $A
python3 scripts/accuracy.py hf $M f32 $NEW $A/hf-f32 > $A/hf.log 2>&1
python3 scripts/accuracy.py hf $M bf16 $NEW $A/hf-bf16 >> $A/hf.log 2>&1
for plan in reference fused fused-f32; do
  /usr/bin/time -f "braid $plan: %e s" $BIN dump --model $M --ids $M/ids.json --plan $plan --device cuda --dtype bf16 \
    --new-tokens $NEW --out $A/braid-$plan 2>&1 | tail -5 | tee -a $A/braid.log
done
python3 scripts/accuracy.py compare $A 2>&1 | tee $A/compare.log
rm -f $A/*.safetensors
