"""Face detection recall by face width, and unmatched detections per image, ours next to deface.

    nice -n 15 .venv/bin/python bench/faces_eval.py                 # ours + deface (installs it once)
    nice -n 15 .venv/bin/python bench/faces_eval.py --no-deface     # ours only
    nice -n 15 .venv/bin/python bench/faces_eval.py --scales 1.0    # one fixed scale, for sweeps
    nice -n 15 .venv/bin/python bench/faces_eval.py --mosaic 4      # the same faces in ~12 MP photos

Data: ``../shared/datasets/faces`` (240 WIDER FACE val photos, 866 valid faces; research-only
licence, never copied into the repository). Skips with a message when it is absent.

Rules (issue 5): a face counts as found when one detection has IoU >= 0.4 with it or covers >= 70%
of it. A detection that finds no face (valid or WIDER-"invalid") is unmatched. WIDER leaves some
tiny background faces unlabelled, so unmatched detections are also reported for detections of at
least 16 px, which are rarely such faces.

``--mosaic 4`` pastes the photos 4 x 4 into 4096x2880 (11.8 MP) mosaics, each photo cut to a
1024x720 cell: the faces keep their pixel sizes in a photo as large as a phone's, which is where
the pixel budget of ``detail="standard"`` (``--detail``) costs recall. Faces cut by a cell's edge
are ignored, like WIDER's "invalid" ones.

deface (the reference) runs in its own virtual environment under ``--cache`` (created with pip on
first use; never needed by maskq), through its Python API at its default threshold 0.2 and full
resolution, exactly as ``deface IMAGE`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO.parent / "shared" / "datasets" / "faces"
CACHE = Path(os.environ.get("MASKQ_BENCH_CACHE", Path.home() / ".cache" / "maskq-bench"))
DEFACE_VERSION = "1.5.0"
BINS = [(0, 16, "<16"), (16, 32, "16-32"), (32, 64, "32-64"), (64, 128, "64-128"), (128, 10**9, ">=128")]
MATCH_IOU = 0.4
MATCH_COVER = 0.7

# Runs inside deface's venv: prints, as its last line, {"stem": {"boxes": [[x, y, w, h, score], ...], "ms": t}, ...}.
DEFACE_RUNNER = r"""
import json, sys, time
import numpy as np
from PIL import Image
from deface.centerface import CenterFace
warm, paths = sys.argv[2] == "warm", sys.argv[3:]
cf = CenterFace(in_shape=None, backend="auto")
out = {}
for p in paths:
    img = np.asarray(Image.open(p).convert("RGB"))
    if warm or not out:  # the first call of a session (and of a shape, with warm) pays set-up costs
        cf(img, threshold=float(sys.argv[1]))
    t = time.perf_counter()
    dets, _ = cf(img, threshold=float(sys.argv[1]))
    ms = (time.perf_counter() - t) * 1000
    boxes = [[float(a), float(b), float(c - a), float(d - b), float(s)] for a, b, c, d, s in dets]
    out[p.rsplit("/", 1)[-1][:-4]] = {"boxes": boxes, "ms": ms, "mp": img.shape[0] * img.shape[1] / 1e6}
print("\n" + json.dumps(out))
"""


def load_dataset(root: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[Path]]:
    """Valid boxes and invalid (ignored) boxes per image stem, as x, y, w, h arrays."""
    boxes = json.loads((root / "boxes.json").read_text())
    valid = {k: np.array(v, np.float64).reshape(-1, 4) for k, v in boxes.items()}
    attrs = json.loads((root / "boxes_with_attributes.json").read_text())
    invalid = {k: np.array([f["box"] for f in v if f["invalid"]], np.float64).reshape(-1, 4) for k, v in attrs.items()}
    images = sorted((root / "images").glob("*.jpg"))
    return valid, invalid, images


def match(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """(faces, detections) boolean: the detection finds the face (IoU >= 0.4 or covers >= 70%)."""
    if len(gt) == 0 or len(det) == 0:
        return np.zeros((len(gt), len(det)), bool)
    g = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:4]], 1)
    d = np.concatenate([det[:, :2], det[:, :2] + det[:, 2:4]], 1)
    tl = np.maximum(g[:, None, :2], d[None, :, :2])
    br = np.minimum(g[:, None, 2:], d[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), 2)
    ga = (gt[:, 2] * gt[:, 3])[:, None]
    da = (det[:, 2] * det[:, 3])[None, :]
    iou = inter / np.maximum(ga + da - inter, 1e-9)
    return (iou >= MATCH_IOU) | (inter / np.maximum(ga, 1e-9) >= MATCH_COVER)


def score(dets: dict[str, np.ndarray], valid: dict, invalid: dict) -> dict:
    """Recall per width bin, unmatched detections per image (all, and >= 16 px wide)."""
    found = {name: [0, 0] for *_, name in BINS}
    unmatched = unmatched16 = 0
    for stem, gt in valid.items():
        det = dets.get(stem, np.zeros((0, 5)))
        m = match(gt, det)
        hit = m.any(1)
        for (lo, hi, name) in BINS:
            sel = (gt[:, 2] >= lo) & (gt[:, 2] < hi)
            found[name][0] += int(hit[sel].sum())
            found[name][1] += int(sel.sum())
        used = m.any(0) | match(invalid[stem], det).any(0)
        unmatched += int((~used).sum())
        unmatched16 += int((~used & (det[:, 2] >= 16)).sum()) if len(det) else 0
    n = len(valid)
    return {"recall": {k: (a / b if b else float("nan"), b) for k, (a, b) in found.items()},
            "unmatched_per_image": unmatched / n, "unmatched16_per_image": unmatched16 / n}


MOSAIC_CELL = (1024, 720)  # width, height: most WIDER val photos are 1024 px wide


def make_mosaics(images: list[Path], valid: dict, invalid: dict, n: int, out: Path) -> tuple[list[Path], dict, dict]:
    """n x n mosaics of consecutive photos (JPEG q 95 under ``out``) and their face boxes."""
    from PIL import Image

    cw, ch = MOSAIC_CELL
    paths, m_valid, m_invalid = [], {}, {}
    for m in range(len(images) // (n * n)):
        canvas = Image.new("RGB", (cw * n, ch * n))
        good: list[list[float]] = []
        ignored: list[list[float]] = []
        for k, p in enumerate(images[m * n * n : (m + 1) * n * n]):
            with Image.open(p) as im:
                cell = im.convert("RGB").crop((0, 0, min(cw, im.width), min(ch, im.height)))
            ox, oy = (k % n) * cw, (k // n) * ch
            canvas.paste(cell, (ox, oy))
            for x, y, w, h in valid[p.stem]:
                inside = x >= 0 and y >= 0 and x + w <= cell.width and y + h <= cell.height
                (good if inside else ignored).append([x + ox, y + oy, w, h])
            ignored += [[x + ox, y + oy, w, h] for x, y, w, h in invalid[p.stem]]
        stem = f"mosaic-{m:02d}"
        canvas.save(out / f"{stem}.jpg", quality=95)
        paths.append(out / f"{stem}.jpg")
        m_valid[stem] = np.array(good, np.float64).reshape(-1, 4)
        m_invalid[stem] = np.array(ignored, np.float64).reshape(-1, 4)
    return paths, m_valid, m_invalid


def run_ours(
    images: list[Path], threshold: float, scales: list[float] | None, precision: str, detail: str = "standard"
) -> tuple[dict, list[float]]:
    from PIL import Image

    from maskq.defaults import MODELS_DIR
    from maskq.faces.detector import PIXEL_BUDGETS, FaceDetector

    detector = FaceDetector.load(MODELS_DIR, precision=precision)
    budget = PIXEL_BUDGETS[detail]
    out, ms_per_mp = {}, []
    for p in images:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        if not out:  # like deface's runner: the session's first call is not timed
            detector.detect(rgb, threshold=threshold, scales=scales, pixel_budget=budget)
        t = time.perf_counter()
        faces = detector.detect(rgb, threshold=threshold, scales=scales, pixel_budget=budget)
        ms_per_mp.append((time.perf_counter() - t) * 1000 / (rgb.shape[0] * rgb.shape[1] / 1e6))
        out[p.stem] = np.array([[f.x, f.y, f.w, f.h, f.score] for f in faces], np.float64).reshape(-1, 5)
    return out, ms_per_mp


def deface_python(cache: Path) -> Path:
    """deface's interpreter in its own venv under ``cache``, created with pip on first use."""
    venv = cache / "venv-deface"
    py = venv / "bin" / "python"
    if not (py.exists() and subprocess.run([py, "-c", "import deface"], capture_output=True).returncode == 0):
        print(f"installing deface=={DEFACE_VERSION} into {venv} (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", f"deface=={DEFACE_VERSION}", "onnx", "onnxruntime"],
                       check=True)
    return py


def run_deface(images: list[Path], threshold: float, cache: Path) -> tuple[dict, list[float]]:
    py = deface_python(cache)
    proc = subprocess.run([py, "-c", DEFACE_RUNNER, str(threshold), "cold", *map(str, images)],
                          check=True, capture_output=True, text=True)
    raw = json.loads(proc.stdout.strip().splitlines()[-1])  # deface prints a line of its own first
    dets = {k: np.array(v["boxes"], np.float64).reshape(-1, 5) for k, v in raw.items()}
    return dets, [v["ms"] / v["mp"] for v in raw.values()]


def print_table(rows: dict[str, tuple[dict, list[float]]]) -> None:
    names = list(rows)
    print(f"{'':26}" + "".join(f"{n:>22}" for n in names))
    first = next(iter(rows.values()))[0]
    for *_, b in BINS:
        cells = "".join(f"{rows[n][0]['recall'][b][0]:>22.3f}" for n in names)
        label = f"recall {b} px (n={first['recall'][b][1]})"
        print(f"{label:26}{cells}")
    labels = (("unmatched_per_image", "unmatched / image"), ("unmatched16_per_image", "unmatched >=16px / img"))
    for key, label in labels:
        print(f"{label:26}" + "".join(f"{rows[n][0][key]:>22.2f}" for n in names))
    print(f"{'median ms per MP':26}" + "".join(f"{np.median(rows[n][1]):>22.0f}" for n in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--threshold", type=float, default=None, help="ours; default: FaceBlurParams' default")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="fixed scales instead of the plan")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="our model file")
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument("--deface-threshold", type=float, default=0.2, help="deface's default")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--limit", type=int, default=None, help="first N images only (quick looks)")
    parser.add_argument("--detail", choices=["standard", "high"], default="standard", help="ours: pixel budget")
    parser.add_argument("--mosaic", type=int, default=0, metavar="N",
                        help="evaluate on N x N mosaics of the photos (4: ~12 MP) instead of the photos")
    args = parser.parse_args()
    if not (args.dataset / "boxes.json").is_file():
        print(f"SKIP: face dataset not found at {args.dataset}", file=sys.stderr)
        return 0
    sys.path.insert(0, str(REPO))
    from maskq.params import FaceBlurParams

    threshold = FaceBlurParams().threshold if args.threshold is None else args.threshold
    valid, invalid, images = load_dataset(args.dataset)
    images = images[: args.limit] if args.limit else images
    valid = {p.stem: valid[p.stem] for p in images}
    with tempfile.TemporaryDirectory(prefix="maskq-faces-") as tmp:
        if args.mosaic:
            images, valid, invalid = make_mosaics(images, valid, invalid, args.mosaic, Path(tmp))
        rows = {}
        dets, ms = run_ours(images, threshold, args.scales, args.precision, args.detail)
        rows[f"maskq {args.precision} {args.detail} t={threshold}"] = (score(dets, valid, invalid), ms)
        if not args.no_deface:
            dets, ms = run_deface(images, args.deface_threshold, args.cache)
            rows[f"deface t={args.deface_threshold}"] = (score(dets, valid, invalid), ms)
    kind = f"{args.mosaic}x{args.mosaic} mosaics" if args.mosaic else "images"
    print(f"{len(images)} {kind}, {sum(len(v) for v in valid.values())} faces, scales={args.scales or 'planned'}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
