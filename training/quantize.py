"""Static int8 quantization (QDQ, per-channel) calibrated on real training images.

    python -m training.quantize --model models/unet.onnx --out models/unet-int8.onnx
    python -m training.quantize --model models/general.onnx --out models/general-int8.onnx \
        --duts DIR  # calibrated on DUTS-TR training photos and pets trainval photos

Dynamic quantization gives no speed-up on this network (feasibility notes, section 3); static QDQ
with int8 weights per channel and uint8 activations runs ~2x faster on AVX-512 VNNI. The
calibration images are training photos (pets trainval; for the general model also DUTS-TR),
never test ones and never ECSSD; the report compares int8 with fp32 with training/evaluate.py.
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
from maskq.models import spec_for_file
from training.evaluate import DEFAULT_DATA_DIR, read_names

DEFAULT_CALIBRATION_IMAGES = 128  # beyond ~100 images the activation ranges stop moving
INPUT_NAME = "image"


def calibration_photos(data: Path, duts: Path | None, count: int, seed: int = 0) -> list[Path]:
    """A seeded sample of training photos: pets trainval, and DUTS-TR when given (half each)."""
    rng = random.Random(seed)
    pets = [data / "images" / f"{n}.jpg" for n in read_names(data, "trainval")]
    pets = [p for p in pets if p.exists()]
    rng.shuffle(pets)
    if duts is None:
        return pets[:count]
    photos = sorted((duts / "DUTS-TR-Image").glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no DUTS-TR-Image/*.jpg under {duts}")
    rng.shuffle(photos)
    return photos[: count - count // 2] + pets[: count // 2]


class PhotoCalibration(CalibrationDataReader):
    """Feeds real training photos, prepared exactly as the runtime prepares them."""

    def __init__(self, photos: list[Path], size: int, batch: int = 8) -> None:
        self.photos, self.size, self.batch = photos, size, batch
        self._iter = iter(range(0, len(self.photos), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._iter, None)
        if start is None:
            return None
        chunk = self.photos[start : start + self.batch]
        arrays = [network_input(np.asarray(Image.open(p).convert("RGB")), self.size) for p in chunk]
        return {INPUT_NAME: np.stack(arrays)}

    def rewind(self) -> None:
        self._iter = iter(range(0, len(self.names), self.batch))


def quantize(model: Path, out: Path, data: Path, count: int = DEFAULT_CALIBRATION_IMAGES,
             duts: Path | None = None) -> None:
    size = spec_for_file(model).input_size
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            PhotoCalibration(calibration_photos(data, duts, count), size),
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
    p.add_argument("--duts", type=Path, help="DUTS-TR folder: calibrate on its photos too (the general model)")
    p.add_argument("--report", type=Path, help="evaluate fp32 and int8 on the test split and write JSON here")
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"error: Oxford-IIIT Pet not found at {args.data}: calibration needs real images", file=sys.stderr)
        return 2
    quantize(args.model, args.out, args.data, args.calibration_images, args.duts)
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
