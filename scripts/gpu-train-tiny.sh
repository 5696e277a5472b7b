#!/usr/bin/env bash
# One device call: trains braid-tiny on the GPU machine and writes the folder to $OUT/braid-tiny.
# Before the call (here): mkdir -p .corpus && cp ../shared/data/corpus/*.txt ../shared/data/qwen3-tokenizer/tokenizer_config.json .corpus/
# Call with carry [".corpus"]; then copy the returned files into models/braid-tiny/.
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 scripts/train_tiny.py --corpus .corpus --template .corpus/tokenizer_config.json \
    --out "$OUT/braid-tiny" --train-seconds "${TRAIN_SECONDS:-240}" 2>&1 | tee "$OUT/train.log"
