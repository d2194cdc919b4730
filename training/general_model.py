"""The general-purpose cut-out network: a U-Net on an ImageNet-pretrained MobileNetV2 encoder.

Input: float32 NHWC RGB in [0, 1] (the same contract as the seed U-Net; torchvision's normalisation
is the graph's first layer). Output: the foreground alpha, (N, H, W, 1) in [0, 1].

The encoder is ``keras.applications.MobileNetV2`` with torchvision's weights
(``training.pretrained``). The decoder upsamples from stride 32 and takes skips at strides 16, 8,
4 and 2, each narrowed by a 1x1 conv first: the wide expand activations (96-576 channels) would
make the high-resolution decoder convs cost more than the whole encoder. The last decoder stage
works at stride 2; the alpha is upsampled bilinearly to the input size (the runtime's guided filter
refines edges at the photo's own resolution). ``with_side_outputs`` adds the deep-supervision heads
(strides 16, 8, 4) used only in training.
"""

from __future__ import annotations

import keras
from keras import layers

from training.model import INPUT_NAME
from training.pretrained import BN_EPSILON, MEAN, STD, imagenet_mobilenet_v2

# (encoder layer, channels after the 1x1 narrowing, decoder filters), from stride 16 down to 2
SKIPS = (
    ("block_13_expand_relu", 96, 128),
    ("block_6_expand_relu", 48, 64),
    ("block_3_expand_relu", 32, 48),
    ("block_1_expand_relu", 24, 32),
)
BOTTLENECK = "block_16_project"  # stride 32, 320 channels; MobileNetV2's 1280-wide Conv_1 is dropped
SIDE_STRIDES = (16, 8, 4)
OUTPUT_NAME = "alpha"


def _conv_bn_relu(x, filters: int, name: str, kernel: int = 3):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def build_general_unet(input_size: int | None = 320, pretrained: bool = True,
                       with_side_outputs: bool = False) -> keras.Model:
    """``input_size=None`` builds a fully convolutional model for any multiple of 32."""
    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    # (x - mean) / std as constants: tf2onnx folds them (a Normalization layer's variables it does not)
    x = layers.Rescaling([1.0 / s for s in STD], offset=[-m / s for m, s in zip(MEAN, STD, strict=True)],
                         name="imagenet_scale")(inputs)
    if pretrained:
        backbone = imagenet_mobilenet_v2((input_size, input_size, 3), include_top=False)
    else:  # same architecture, torch's batch-norm epsilon; the weights come from a checkpoint
        backbone = keras.applications.MobileNetV2((input_size, input_size, 3), include_top=False, weights=None)
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.epsilon = BN_EPSILON
    encoder = keras.Model(backbone.input, [backbone.get_layer(n).output for n, _, _ in SKIPS]
                          + [backbone.get_layer(BOTTLENECK).output], name="encoder")
    *skips, x = encoder(x)
    sides = []
    for i, ((_, narrow, filters), skip) in enumerate(zip(SKIPS, skips, strict=True)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}_up")(x)
        s = _conv_bn_relu(skip, narrow, f"dec{i}_skip", kernel=1)
        x = layers.Concatenate(name=f"dec{i}_concat")([x, s])
        x = _conv_bn_relu(x, filters, f"dec{i}_a")
        x = _conv_bn_relu(x, filters, f"dec{i}_b")
        if i < len(SIDE_STRIDES):
            sides.append((x, SIDE_STRIDES[i]))
    logits = layers.Conv2D(1, 3, padding="same", name="head")(x)
    logits = layers.UpSampling2D(2, interpolation="bilinear", name="head_up")(logits)
    alpha = layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)(logits)
    if not with_side_outputs:
        return keras.Model(inputs, alpha, name="general_unet")
    side_alphas = []
    for feat, stride in sides:
        s = layers.Conv2D(1, 3, padding="same", name=f"side{stride}_head")(feat)
        s = layers.UpSampling2D(stride, interpolation="bilinear", name=f"side{stride}_up")(s)
        side_alphas.append(layers.Activation("sigmoid", dtype="float32", name=f"side{stride}")(s))
    return keras.Model(inputs, [alpha, *side_alphas], name="general_unet_train")


def copy_weights(source: keras.Model, target: keras.Model) -> int:
    """Layer by layer, by name, into nested models too: sizes may differ (the network is fully
    convolutional) and a checkpoint may hold layers the target lacks (the input scaling was once a
    Normalization layer). Batch norm takes the checkpoint's epsilon with its statistics: the same
    weights under another epsilon are another network. Returns the layers copied; a target layer
    with weights and no source fails loudly."""
    copied = 0
    for layer in target.layers:
        if not layer.weights:
            continue
        src = source.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            copied += copy_weights(src, layer)
            continue
        layer.set_weights(src.get_weights())
        if isinstance(layer, layers.BatchNormalization):
            layer.epsilon = src.epsilon
        copied += 1
    return copied


def inference_model(trained: keras.Model, input_size: int | None) -> keras.Model:
    """The serving network at ``input_size``, with the weights of a (side-output) training model."""
    model = build_general_unet(input_size, pretrained=False, with_side_outputs=True)
    copy_weights(trained, model)
    return keras.Model(model.input, model.get_layer(OUTPUT_NAME).output, name="general_unet")
