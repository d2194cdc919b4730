"""Loss and metrics on the 3-class trimap, centred on what the product uses: foreground vs background.

Foreground is pet plus border (classes 0 and 2), background class 1, as in the evaluation.
"""

from __future__ import annotations

import keras
from keras import ops

BACKGROUND = 1
SMOOTH = 1.0  # keeps the soft Dice finite on crops with no foreground


def foreground_probability(y_pred):
    return 1.0 - y_pred[..., BACKGROUND]


def _foreground_truth(y_true):
    return ops.cast(ops.not_equal(ops.squeeze(ops.cast(y_true, "int32"), -1), BACKGROUND), "float32")


@keras.saving.register_keras_serializable(package="maskq")
class CrossEntropyDice(keras.losses.Loss):
    """Sparse cross-entropy on the 3 classes plus (1 - soft foreground Dice) per image."""

    def __init__(self, dice_weight: float = 1.0, name: str = "ce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        ce = ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred), axis=(1, 2))
        truth = _foreground_truth(y_true)
        prob = foreground_probability(y_pred)
        inter = ops.sum(truth * prob, axis=(1, 2))
        denom = ops.sum(truth, axis=(1, 2)) + ops.sum(prob, axis=(1, 2))
        dice = (2.0 * inter + SMOOTH) / (denom + SMOOTH)
        return ce + self.dice_weight * (1.0 - dice)

    def get_config(self):
        return {**super().get_config(), "dice_weight": self.dice_weight}


@keras.saving.register_keras_serializable(package="maskq")
class ForegroundDice(keras.metrics.Mean):
    """Hard foreground Dice (argmax), averaged over images: the number the model card reports."""

    def __init__(self, name: str = "fg_dice", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = _foreground_truth(y_true)
        pred = ops.cast(ops.not_equal(ops.argmax(y_pred, axis=-1), BACKGROUND), "float32")
        inter = ops.sum(truth * pred, axis=(1, 2))
        denom = ops.sum(truth, axis=(1, 2)) + ops.sum(pred, axis=(1, 2))
        dice = ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)
        return super().update_state(dice, sample_weight=sample_weight)
