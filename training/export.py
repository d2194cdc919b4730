"""Export trained weights to ONNX with tf2onnx (opset 17, dynamic batch), checked against Keras.

``python -m training.export --weights runs/stage2-256/best.keras --out models/unet.onnx``

The export fails (exit 1, no file written) when ONNX Runtime and Keras disagree by more than
``PARITY_TOLERANCE`` on real images: a silently wrong model is worse than none.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from training.data import DEFAULT_DATA_DIR, make_dataset, read_split
from training.model import INPUT_NAME, build_unet

OPSET = 17
PARITY_TOLERANCE = 1e-4
OUTPUT_NAME = "probs"
PARITY_IMAGES = 8


def load_weights_at(weights: Path, size: int = 256) -> keras.Model:
    """The trained weights in a model built at ``size`` (training may have used another size)."""
    model = build_unet(size)
    model.set_weights(keras.models.load_model(weights, compile=False).get_weights())
    return model


def to_onnx(model: keras.Model) -> onnx.ModelProto:
    spec = (tf.TensorSpec((None, model.input_shape[1], model.input_shape[2], 3), tf.float32, name=INPUT_NAME),)
    fn = tf.function(lambda x: {OUTPUT_NAME: model(x, training=False)})
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET)
    proto.doc_string = "maskq U-Net: float32 NHWC RGB in [0,1], 256x256 -> softmax (foreground, background, border)"
    onnx.checker.check_model(proto)
    return proto


def parity_batch(data: Path, size: int = 256) -> np.ndarray:
    """Real test images when the data set is there, else a fixed random batch."""
    try:
        names = read_split(data, "test")[:PARITY_IMAGES]
        images, _ = next(iter(make_dataset(data, names, size, PARITY_IMAGES, training=False)))
        return images.numpy().astype(np.float32)
    except FileNotFoundError:
        return np.random.default_rng(0).random((PARITY_IMAGES, size, size, 3), dtype=np.float32)


def max_abs_diff(model: keras.Model, proto: onnx.ModelProto, batch: np.ndarray) -> float:
    expected = model.predict_on_batch(batch)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return float(np.max(np.abs(expected - got)))


def export_savedmodel(model: keras.Model, path: Path) -> None:
    """The SavedModel behind MASKQ_RUNTIME=tensorflow (maskq.segmentation.TensorFlowSegmenter)."""
    model.export(str(path), format="tf_saved_model", verbose=False)


def export(weights: Path, out: Path, data: Path = DEFAULT_DATA_DIR, savedmodel: Path | None = None) -> dict:
    model = load_weights_at(weights)
    proto = to_onnx(model)
    diff = max_abs_diff(model, proto, parity_batch(data))
    if not diff < PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX and Keras disagree: max |diff| {diff:.2e} >= {PARITY_TOLERANCE:.0e}; nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".onnx", delete=False) as tmp:
        tmp.write(proto.SerializeToString())
    Path(tmp.name).chmod(0o644)  # a tempfile is private; the model is a shipped artifact
    Path(tmp.name).replace(out)
    if savedmodel:
        export_savedmodel(model, savedmodel)
    info = {
        "onnx": str(out),
        "weights": str(weights),
        "opset": OPSET,
        "max_abs_diff_vs_keras": diff,
        "bytes": out.stat().st_size,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True, help="a .keras checkpoint from training.train")
    p.add_argument("--out", type=Path, default=Path("models/unet.onnx"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="test images for the parity check")
    p.add_argument("--savedmodel", type=Path, help="also write a TF SavedModel here (e.g. models/unet_savedmodel)")
    args = p.parse_args(argv)
    try:
        info = export(args.weights, args.out, args.data, args.savedmodel)
    except RuntimeError as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
