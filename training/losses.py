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


# --- the general model: a foreground alpha with an "ignore" flag (training.saliency_data) ---

EDGE_WINDOW = 31  # px at 256; the structure weight's neighbourhood (F3Net's choice)
EDGE_GAIN = 5.0  # weight = 1 + gain * |local mean - mask|: up to 6x on outlines and thin parts


def _alpha_ignore(y_true):
    return y_true[..., :1], 1.0 - y_true[..., 1:2]


@keras.saving.register_keras_serializable(package="maskq")
class StructureLoss(keras.losses.Loss):
    """Edge-weighted BCE plus edge-weighted soft IoU per image (F3Net's structure loss).

    BCE alone is satisfied by a blurry blob; the IoU term asks for the whole object, and the weight
    puts both where masks go wrong: outlines and thin parts. Pixels flagged "ignore" count nowhere.
    """

    def __init__(self, name: str = "structure", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        truth, valid = _alpha_ignore(ops.cast(y_true, "float32"))
        pred = ops.clip(ops.cast(y_pred, "float32"), 1e-6, 1.0 - 1e-6)
        # a box mean is separable: two 1-D pools cost 2x31 instead of 31x31 adds a pixel
        local = ops.average_pool(truth, (EDGE_WINDOW, 1), strides=1, padding="same")
        local = ops.average_pool(local, (1, EDGE_WINDOW), strides=1, padding="same")
        weight = (1.0 + EDGE_GAIN * ops.abs(local - truth)) * valid
        bce = -(truth * ops.log(pred) + (1.0 - truth) * ops.log(1.0 - pred))
        wbce = ops.sum(weight * bce, axis=(1, 2, 3)) / ops.maximum(ops.sum(weight, axis=(1, 2, 3)), 1.0)
        inter = ops.sum(weight * pred * truth, axis=(1, 2, 3))
        union = ops.sum(weight * (pred + truth), axis=(1, 2, 3))
        wiou = 1.0 - (inter + SMOOTH) / (union - inter + SMOOTH)
        return wbce + wiou


@keras.saving.register_keras_serializable(package="maskq")
class AlphaDice(keras.metrics.Mean):
    """Dice of the alpha thresholded at 0.5 against the true mask, ignored pixels left out."""

    def __init__(self, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth, valid = _alpha_ignore(ops.cast(y_true, "float32"))
        truth = ops.cast(truth > 0.5, "float32") * valid
        pred = ops.cast(ops.cast(y_pred, "float32") > 0.5, "float32") * valid
        inter = ops.sum(truth * pred, axis=(1, 2, 3))
        denom = ops.sum(truth, axis=(1, 2, 3)) + ops.sum(pred, axis=(1, 2, 3))
        dice = ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)
        return super().update_state(dice, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="maskq")
class AlphaMAE(keras.metrics.Mean):
    """Mean absolute error of the alpha, ignored pixels left out."""

    def __init__(self, name: str = "mae", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth, valid = _alpha_ignore(ops.cast(y_true, "float32"))
        err = ops.sum(ops.abs(ops.cast(y_pred, "float32") - truth) * valid, axis=(1, 2, 3))
        return super().update_state(err / ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0), sample_weight=sample_weight)
