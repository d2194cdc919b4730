#!/usr/bin/env bash
# From trained weights to the shipped artifacts and the card's figures:
# export (parity-checked) -> int8 quantization -> evaluation of both -> plots.
# Usage: training/release.sh [WEIGHTS] (default: the last stage's best checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
WEIGHTS="${1:-runs/stage3-256/best.keras}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

"$PY" -m training.export --weights "$WEIGHTS" --out models/unet.onnx | tee models/export.json
"$PY" -m training.quantize --model models/unet.onnx --out models/unet-int8.onnx
"$PY" -m training.evaluate --model models/unet.onnx --out models/eval-fp32.json > /dev/null
"$PY" -m training.evaluate --model models/unet-int8.onnx --out models/eval-int8.json > /dev/null
"$PY" -m training.plots --runs runs --model models/unet.onnx --out models
# the training log travels with the model: runs/ is not committed and a recycled machine loses it
cp "$(dirname "$WEIGHTS")/log.csv" "models/training-log-$(basename "$(dirname "$WEIGHTS")").csv"
