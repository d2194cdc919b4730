#!/usr/bin/env bash
# From the general model's trained weights to the shipped artifacts and the card's figures:
# export (parity-checked) -> int8 (calibrated on DUTS-TR + pets training photos) -> evaluation of
# both (pets test split and ECSSD) -> plots -> the side-by-side benchmark with u2netp.
# Usage: training/release_general.sh WEIGHTS DUTS_DIR [LOG.csv ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
WEIGHTS="${1:?usage: training/release_general.sh WEIGHTS DUTS_DIR [LOG.csv ...]}"
DUTS="${2:?DUTS-TR folder}"
shift 2
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

"$PY" -m training.export --model general --weights "$WEIGHTS" --out models/general.onnx | tee models/general-export.json
"$PY" -m training.quantize --model models/general.onnx --out models/general-int8.onnx --duts "$DUTS"
"$PY" -m training.evaluate --model models/general.onnx --out models/general-eval-fp32.json > /dev/null
"$PY" -m training.evaluate --model models/general-int8.onnx --out models/general-eval-int8.json > /dev/null
# the training logs travel with the model: runs/ is not committed and a recycled machine loses it
for log in "$@"; do cp "$log" "models/general-training-log-$(basename "$(dirname "$log")").csv"; done
"$PY" -m training.plots --logs models/general-training-log-*.csv --model models/general.onnx --out models
"$PY" bench/models_compare.py ${BENCH_LIMIT:+--limit "$BENCH_LIMIT"} --json models/general-vs-u2netp.json | tee models/general-vs-u2netp.txt
