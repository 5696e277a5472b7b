#!/usr/bin/env bash
# One device call (issue 6): `braid-cli tune` twice on the random Qwen3-0.6B-shaped model (the
# first run tunes and compiles and fills CubeCL's persistent cache, the second finds it), then
# `generate` and `bench throughput` in fresh processes on the filled cache. Builds nothing:
# carry dist/ (CUDA braid-cli).
source scripts/gpu-setup.sh
for i in 1 2; do
  echo "== tune, run $i" | tee -a $OUT/tune.txt
  /usr/bin/time -f "wall %e s" timeout 300 $BIN tune --model $M --device cuda --dtype bf16 --plan fused 2>&1 | tee -a $OUT/tune.txt
done
du -sh target/environment 2>/dev/null | tee -a $OUT/tune.txt
$BIN generate --model $M --device cuda --dtype bf16 --plan fused --prompt "The history of the city begins with" --max-tokens 256 \
  --ignore-eos --temperature 0 --repetition-penalty 1 2>&1 >/dev/null | tail -1 | tee $OUT/generate.txt
timeout 240 $BIN bench throughput --model $M --device cuda --dtype bf16 --plan fused --json $OUT/throughput-fused.json 2>&1 | tail -3 | tee $OUT/throughput-fused.txt
