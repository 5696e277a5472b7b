# Sourced by the gpu-*.sh scripts that run on the device machine (repository root; $OUT is
# the folder that comes back): results go to /tmp/results and come back as
# $OUT/results.tar.gz (even when the script fails part-way), the carried CUDA braid-cli is
# unpacked to $BIN, the card is recorded, and the random Qwen3-0.6B-shaped bf16 model of
# scripts/accuracy.py is made at $M (once per machine). Before the call, here:
#   cp -r ../shared/data/qwen3-tokenizer dist/   (the model's tokenizer; dist/ is not committed)
# or, when two binaries leave too little of the 64 MiB a call carries, its 1.4 MB xz tarball:
#   tar -C ../shared/data -cJf dist/qwen3-tokenizer.tar.xz qwen3-tokenizer
set -uo pipefail
export PYTHONUNBUFFERED=1
FINAL=$OUT; OUT=/tmp/results; mkdir -p $OUT
trap 'tar -C /tmp -czf $FINAL/results.tar.gz results' EXIT
BIN=/tmp/braid-cli
[ ! -f dist/braid-cli.xz ] || { xz -dc dist/braid-cli.xz > $BIN && chmod +x $BIN; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; date -u; } | tee $OUT/gpu.txt
M=/tmp/q06
[ -f dist/qwen3-tokenizer/tokenizer.json ] || [ ! -f dist/qwen3-tokenizer.tar.xz ] || tar -C dist -xJf dist/qwen3-tokenizer.tar.xz
[ -f dist/qwen3-tokenizer/tokenizer.json ] || echo "gpu-setup: no dist/qwen3-tokenizer (cp -r ../shared/data/qwen3-tokenizer dist/ or its tarball before the call): the model cannot be made" | tee $OUT/setup-warning.txt
[ -f $M/config.json ] || python3 scripts/accuracy.py make $M > $OUT/make.log 2>&1
