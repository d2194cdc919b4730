"""Keras weights back from a shipped ONNX file: ``python -m training.from_onnx --out runs/recovered.keras``.

Why: the checkpoint a release was exported from lives in ``runs/`` (not committed), and a machine
that is recycled loses it. The ONNX file holds every weight: convolutions as they are, and each
batch norm as the ``mul``/``add`` pair tf2onnx folds it into. Writing those back as gamma and beta
over a unit variance and zero mean gives a Keras model whose inference output equals the ONNX
file's (checked here, max |diff| < 1e-4), so a later fine-tune (``training.train --init-from``) or a
SavedModel export (``training.export --savedmodel``) can start from what users actually run.
The moving statistics are then not the training ones: a fine-tune from recovered weights should
keep batch norm frozen (``training.train --freeze-bn``): in training mode it would normalise with
batch statistics the recovered scales were never meant for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
from onnx import numpy_helper

from training.data import DEFAULT_DATA_DIR
from training.export import PARITY_TOLERANCE, max_abs_diff, parity_batch
from training.model import build_unet


def _weights_by_node(proto: onnx.ModelProto) -> dict[str, list[np.ndarray]]:
    """Each node's constant inputs, in input order, keyed by the node's name (tf2onnx keeps the
    Keras layer in it: ``unet_1/<layer>_1/<op>``)."""
    consts = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    return {node.name: [consts[i] for i in node.input if i in consts] for node in proto.graph.node}


def _node_weights(nodes: dict[str, list[np.ndarray]], layer: str, op: str, count: int) -> list[np.ndarray]:
    name = f"unet_1/{layer}_1/{op}"
    found = nodes.get(name, [])
    if len(found) != count:
        raise ValueError(f"{name}: expected {count} constant inputs in the ONNX file, found {len(found)}")
    return found


def recover(proto: onnx.ModelProto) -> keras.Model:
    """A Keras U-Net (fully convolutional) carrying the ONNX file's weights."""
    nodes = _weights_by_node(proto)
    model = build_unet(input_size=None)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kernel, bias = _node_weights(nodes, layer.name, "BiasAdd", 2)
            # one transpose serves both: ONNX Conv (out, in, kh, kw) -> Keras (kh, kw, in, out), and
            # ONNX ConvTranspose (in, out, kh, kw) -> Keras (kh, kw, out, in)
            layer.set_weights([kernel.transpose(2, 3, 1, 0), bias])
        elif isinstance(layer, keras.layers.BatchNormalization):
            (scale,) = _node_weights(nodes, layer.name, "batchnorm/mul_1", 1)
            (shift,) = _node_weights(nodes, layer.name, "batchnorm/add_1", 1)
            scale, shift = scale.reshape(-1), shift.reshape(-1)
            # y = (x - 0) / sqrt((1 - eps) + eps) * scale + shift = x * scale + shift
            layer.set_weights([scale, shift, np.zeros_like(scale), np.full_like(scale, 1.0 - layer.epsilon)])
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/unet.onnx"))
    p.add_argument("--out", type=Path, required=True, help="the .keras file to write")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="test images for the parity check")
    args = p.parse_args(argv)
    proto = onnx.load(str(args.model))
    model = recover(proto)
    diff = max_abs_diff(model, proto, parity_batch(args.data))
    if not diff < PARITY_TOLERANCE:
        print(f"recovery failed: Keras and ONNX disagree, max |diff| {diff:.2e}; nothing written", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(json.dumps({"onnx": str(args.model), "keras": str(args.out), "max_abs_diff_vs_onnx": diff}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
