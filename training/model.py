"""The seed's U-Net (Keras 3): 256x256x3 in, 3-class trimap softmax out, 2,164,627 parameters.

The architecture is fixed by the seed so that its parameter count is a contract (a test checks it);
the dropout rate is the one knob the seed did not write down.
"""

from __future__ import annotations

import keras
from keras import layers

NUM_CLASSES = 3  # 0 foreground (pet), 1 background, 2 border: the trimap values minus one
ENCODER_FILTERS = (16, 32, 64, 128)
BOTTLENECK_FILTERS = 256
DEFAULT_DROPOUT = 0.1  # not given by the seed; 0.1 regularises without slowing convergence here
INPUT_NAME = "image"


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(input_size: int | None = 256, dropout: float = DEFAULT_DROPOUT) -> keras.Model:
    """Build the U-Net. ``input_size=None`` gives a fully convolutional model for any multiple of 16."""
    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    x = inputs
    skips = []
    for i, filters in enumerate(ENCODER_FILTERS):
        x = _conv_block(x, filters, f"enc{i}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
        x = layers.Dropout(dropout, name=f"enc{i}_drop")(x)
    x = _conv_block(x, BOTTLENECK_FILTERS, "bottleneck")
    for i, (filters, skip) in enumerate(zip(reversed(ENCODER_FILTERS), reversed(skips), strict=True)):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"dec{i}_up")(x)
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skip])
        x = layers.Dropout(dropout, name=f"dec{i}_drop")(x)
        x = _conv_block(x, filters, f"dec{i}")
    logits = layers.Conv2D(NUM_CLASSES, 1, name="head")(x)
    # float32 softmax even under mixed precision: the probabilities are the model's contract
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(inputs, outputs, name="unet")
