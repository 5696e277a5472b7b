#!/usr/bin/env bash
# One device call: trains braid-tiny on the GPU machine; the folder comes back as a split tar
# ($OUT/braid-tiny.tar.part-*; the device tool returns files of at most 16 MiB).
# Before the call (here): mkdir -p .corpus && cp ../shared/data/corpus/*.txt ../shared/data/qwen3-tokenizer/tokenizer_config.json .corpus/
# Call with carry [".corpus"]; then: cat <files_at>/braid-tiny.tar.part-* | tar -xf - -C models/
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 scripts/train_tiny.py --corpus .corpus --template .corpus/tokenizer_config.json \
    --out "$OUT/braid-tiny" --train-seconds "${TRAIN_SECONDS:-240}" 2>&1 | tee "$OUT/train.log"
tar -C "$OUT" -cf - braid-tiny | split -b 15M - "$OUT/braid-tiny.tar.part-"
rm -rf "$OUT/braid-tiny"
ls -la "$OUT"
