"""Evaluation of the shipped model on real test images: above a floor no untrained model reaches."""

from __future__ import annotations

import numpy as np
import pytest

from maskq import defaults
from training.evaluate import boundary_iou, dice_iou, evaluate

# An untrained network scores ~0.4-0.6 here (all-foreground on pets that fill ~half the frame
# gives ~0.6); the shipped model scores ~0.9 (models/MODEL_CARD.md).
DICE_FLOOR = 0.8


def test_dice_iou_definitions():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5], b[:, :5] = True, True
    assert dice_iou(a, b) == (0.5, pytest.approx(1 / 3))
    assert dice_iou(a, a) == (1.0, 1.0) and dice_iou(~a & a, ~a & a) == (1.0, 1.0)
    assert boundary_iou(a, a) == 1.0


def test_shipped_model_on_test_images(pets):
    model = defaults.MODELS_DIR / "unet.onnx"
    if not model.exists():
        pytest.skip("models/unet.onnx is missing")
    report = evaluate(model, pets, limit=24)
    assert report["net256"]["images"] == 24
    assert report["net256"]["dice"] > DICE_FLOOR, report
    assert report["fullres"]["guided"]["dice"] > DICE_FLOOR, report
    assert 0.5 < report["net256"]["pixel_accuracy"] <= 1.0
