#!/usr/bin/env bash
# The recipe behind models/general.onnx, as it was run (models/GENERAL_MODEL_CARD.md): two stages at
# 192 px, batch 16, on DUTS-TR + Oxford-IIIT Pet trainval (650 photos held out), 2-core CPU.
# Stage 1 was started with an 8-epoch schedule and stopped after its first epoch (the session's
# time would not hold 8); stage 2 starts from it with a 5-epoch cosine schedule. Both resume.
# Usage: training/recipe_general.sh DUTS_DIR [RUNS_DIR] [CACHE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DUTS="${1:?usage: training/recipe_general.sh DUTS_DIR [RUNS_DIR] [CACHE_DIR]}"
RUNS="${2:-runs}"
CACHE="${3:-$RUNS/cache288}"
PY="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

# stage 1: stopped by hand after epoch 1 (val Dice 0.774); --epochs 1 alone would anneal the lr
timeout "${S1_SECONDS:-1500}" "$PY" -m training.train_general --duts "$DUTS" --cache "$CACHE" \
  --out "$RUNS/general-192" --image-size 192 --epochs 8 --resume || true
"$PY" -m training.train_general --duts "$DUTS" --cache "$CACHE" --out "$RUNS/general-192b" \
  --image-size 192 --epochs 5 --lr 8e-4 --warmup-epochs 0.05 --init-from "$RUNS/general-192/last.keras" --resume
