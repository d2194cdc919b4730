#!/usr/bin/env bash
# The recipe behind models/unet.onnx: 128 px for most epochs (4x cheaper per image on a CPU),
# then a fine-tune at the network's 256 px, then a longer 256 px fine-tune with batch norm frozen.
# Every stage resumes, so re-running this script after an interruption continues where it stopped.
# Usage: training/recipe.sh [RUNS_DIR]
#
# The shipped file's stage 3 started from the stage-2 weights recovered out of the ONNX file
# (python -m training.from_onnx --out runs/recovered.keras: the runs/ folder of stages 1-2 was lost
# with the machine that trained them); with batch norm frozen that is the same network as
# stage 2's best.keras. It was stopped after 5 of its 8 epochs (11 min each on a 2-core AVX2 CPU);
# the best validation Dice came at epoch 2. See models/MODEL_CARD.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-runs}"
PY="${PYTHON:-.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
S1_EPOCHS="${S1_EPOCHS:-28}"
S2_EPOCHS="${S2_EPOCHS:-5}"
S3_EPOCHS="${S3_EPOCHS:-8}"

"$PY" -m training.train --out "$RUNS/stage1-128" --image-size 128 --batch-size 16 \
  --epochs "$S1_EPOCHS" --lr 2e-3 --resume
"$PY" -m training.train --out "$RUNS/stage2-256" --image-size 256 --batch-size 8 \
  --epochs "$S2_EPOCHS" --lr 4e-4 --warmup-epochs 0.3 --init-from "$RUNS/stage1-128/best.keras" --resume
"$PY" -m training.train --out "$RUNS/stage3-256" --image-size 256 --batch-size 8 \
  --epochs "$S3_EPOCHS" --lr 2e-4 --warmup-epochs 0.3 --init-from "$RUNS/stage2-256/best.keras" --freeze-bn --resume
