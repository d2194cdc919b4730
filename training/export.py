"""Export trained weights to ONNX with tf2onnx (opset 17, dynamic batch), checked against Keras.

``python -m training.export --weights runs/stage2-256/best.keras --out models/unet.onnx``
``python -m training.export --model general --weights runs/general/best.keras --out models/general.onnx``

The graph is built at the registry's input size for that model (``maskq.models``).

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

from maskq.models import MODELS, ModelSpec
from training.data import DEFAULT_DATA_DIR, make_dataset, read_split
from training.model import INPUT_NAME, build_unet

OPSET = 17
PARITY_TOLERANCE = 1e-4
OUTPUT_NAMES = {"trimap3": "probs", "alpha1": "alpha"}
PARITY_IMAGES = 8
DOC = {"trimap3": "softmax (foreground, background, border)", "alpha1": "foreground alpha in [0,1]"}


def _load(weights: Path) -> keras.Model:
    import training.losses  # noqa: F401 - registers the custom losses and metrics a .keras file names

    return keras.models.load_model(weights, compile=False)


def load_weights_at(weights: Path, spec: ModelSpec = MODELS["pets"]) -> keras.Model:
    """The trained weights in the serving network at the model's input size (training may have
    used another size, and the general model trains with extra side outputs)."""
    if spec.name == "pets":
        model = build_unet(spec.input_size)
        model.set_weights(_load(weights).get_weights())
        return model
    from training.general_model import build_general_unet, inference_model

    if weights.name.endswith(".weights.h5"):
        trained = build_general_unet(spec.input_size, pretrained=False, with_side_outputs=True)
        trained.load_weights(weights)
    else:
        trained = _load(weights)
    return inference_model(trained, spec.input_size)


def to_onnx(model: keras.Model, spec: ModelSpec = MODELS["pets"]) -> onnx.ModelProto:
    size = spec.input_size
    signature = (tf.TensorSpec((None, size, size, 3), tf.float32, name=INPUT_NAME),)
    fn = tf.function(lambda x: {OUTPUT_NAMES[spec.output]: model(x, training=False)})
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=OPSET)
    proto.doc_string = f"maskq {spec.name}: float32 NHWC RGB in [0,1], {size}x{size} -> {DOC[spec.output]}"
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
    got = session.run(None, {INPUT_NAME: batch})[0]
    return float(np.max(np.abs(expected - got)))


def export_savedmodel(model: keras.Model, path: Path) -> None:
    """The SavedModel behind MASKQ_RUNTIME=tensorflow (maskq.segmentation.TensorFlowSegmenter)."""
    model.export(str(path), format="tf_saved_model", verbose=False)


def export(weights: Path, out: Path, data: Path = DEFAULT_DATA_DIR, savedmodel: Path | None = None,
           spec: ModelSpec = MODELS["pets"]) -> dict:
    model = load_weights_at(weights, spec)
    proto = to_onnx(model, spec)
    diff = max_abs_diff(model, proto, parity_batch(data, spec.input_size))
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
        "model": spec.name,
        "input_size": spec.input_size,
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
    p.add_argument("--model", choices=sorted(MODELS), default="pets", help="which network the weights are for")
    p.add_argument("--weights", type=Path, required=True,
                   help="a .keras checkpoint (training.train, training.train_general) or general .weights.h5")
    p.add_argument("--out", type=Path, default=Path("models/unet.onnx"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="test images for the parity check")
    p.add_argument("--savedmodel", type=Path, help="also write a TF SavedModel here (e.g. models/unet_savedmodel)")
    args = p.parse_args(argv)
    try:
        info = export(args.weights, args.out, args.data, args.savedmodel, MODELS[args.model])
    except RuntimeError as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
