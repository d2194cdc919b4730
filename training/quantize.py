"""Static int8 quantization (QDQ, per-channel) calibrated on real training images.

    python -m training.quantize --model models/unet.onnx --out models/unet-int8.onnx

Dynamic quantization gives no speed-up on this network (feasibility notes, section 3); static QDQ
with int8 weights per channel and uint8 activations runs ~2x faster on AVX-512 VNNI. The
calibration images are trainval photos, never test ones; the report compares int8 with fp32 on
the test split with training/evaluate.py's metric.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

from maskq.matting import network_input
from training.evaluate import DEFAULT_DATA_DIR, read_names

DEFAULT_CALIBRATION_IMAGES = 128  # beyond ~100 images the activation ranges stop moving
INPUT_NAME = "image"


class PetCalibration(CalibrationDataReader):
    """Feeds real trainval photos, prepared exactly as the runtime prepares them."""

    def __init__(self, data: Path, count: int, seed: int = 0, batch: int = 8) -> None:
        names = [n for n in read_names(data, "trainval") if (data / "images" / f"{n}.jpg").exists()]
        random.Random(seed).shuffle(names)
        self.names = names[:count]
        self.data, self.batch = data, batch
        self._iter = iter(range(0, len(self.names), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._iter, None)
        if start is None:
            return None
        chunk = self.names[start : start + self.batch]
        arrays = [
            network_input(np.asarray(Image.open(self.data / "images" / f"{n}.jpg").convert("RGB"))) for n in chunk
        ]
        return {INPUT_NAME: np.stack(arrays)}

    def rewind(self) -> None:
        self._iter = iter(range(0, len(self.names), self.batch))


def quantize(model: Path, out: Path, data: Path, count: int = DEFAULT_CALIBRATION_IMAGES) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            PetCalibration(data, count),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            # 7-bit weights: AVX2-only CPUs (no VNNI) multiply u8 x s8 with VPMADDUBSW, whose
            # 16-bit sums saturate on full-range weights (MODEL_CARD.md has both measured)
            reduce_range=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/unet.onnx"))
    p.add_argument("--out", type=Path, default=Path("models/unet-int8.onnx"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES)
    p.add_argument("--report", type=Path, help="evaluate fp32 and int8 on the test split and write JSON here")
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"error: Oxford-IIIT Pet not found at {args.data}: calibration needs real images", file=sys.stderr)
        return 2
    quantize(args.model, args.out, args.data, args.calibration_images)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    if args.report:
        from training.evaluate import evaluate

        report = {"fp32": evaluate(args.model, args.data), "int8": evaluate(args.out, args.data)}
        report["dice_drop_net256"] = report["fp32"]["net256"]["dice"] - report["int8"]["net256"]["dice"]
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: report[k] for k in ("dice_drop_net256",)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
