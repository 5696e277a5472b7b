#!/usr/bin/env bash
# One device call: unpack the carried CUDA braid-cli and run scripts/gpu-diagnose.py.
set -uo pipefail
export PYTHONUNBUFFERED=1
xz -dc dist/braid-cli.xz > /tmp/braid-cli && chmod +x /tmp/braid-cli
nvidia-smi --query-gpu=name --format=csv,noheader
python3 scripts/gpu-diagnose.py 2>&1 | grep -v "Loading weights" | tee $OUT/diagnose.log
