"""Evaluate a shipped ONNX model on the Oxford-IIIT Pet test split and on ECSSD; writes a JSON report.

    python -m training.evaluate --model models/unet.onnx --out models/eval-fp32.json
    python -m training.evaluate --model models/general.onnx --out models/general-eval-fp32.json

ECSSD (``../shared/datasets/ecssd-dev``, 756 everyday photos with object masks; evaluation only) is
scored when the folder is there: at the photos' stored size through the runtime's matting, Dice and
IoU at 128x128 (both masks resized, alpha > 0.5), MAE of the soft alpha, and boundary F at 2 px.

Foreground is pet plus border (trimap 1 and 3) against background (trimap 2). Per image: Dice and
IoU of the foreground, averaged over images; plus 3-class pixel accuracy at 256x256. Three views:
- ``net256``: the network's own resolution (image squashed to 256x256, trimap resized nearest);
- ``stored``: every test image at its stored size, through the runtime's upsampling (maskq.matting);
- ``fullres``: the 300 test photos at original resolution, through the same upsampling, with the
  guided filter and, for comparison, plain bilinear upsampling.
Needs no TensorFlow: it scores exactly the artifacts that ship, through the code that serves them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from maskq.defaults import SHARED_DATASETS
from maskq.matting import DEFAULT_MATTING, MattingParams, network_input, soft_alpha
from maskq.segmentation import OnnxSegmenter

DEFAULT_DATA_DIR = SHARED_DATASETS / "oxford-pets"
DEFAULT_ECSSD_DIR = SHARED_DATASETS / "ecssd-dev"
SCORE_SIZE = 128  # Dice and IoU on masks resized to 128x128: every photo weighs the same
BOUNDARY_TOLERANCE = 2  # px at the stored size, for boundary F
BATCH = 16
TRIMAP_BACKGROUND = 2  # trimap values: 1 pet, 2 background, 3 border


@dataclass
class Scores:
    images: int
    dice: float
    iou: float
    pixel_accuracy: float | None = None
    dice_min: float | None = None
    boundary_iou: float | None = None  # IoU within a band around the true outline: where edges show


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Foreground Dice and IoU of two boolean masks; both 1.0 when both are empty."""
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    union = total - inter
    if total == 0:
        return 1.0, 1.0
    return float(2 * inter / total), float(inter / union)


BAND_RATIO = 0.01  # the boundary band's half-width as a share of the image diagonal


def boundary_band(truth: np.ndarray) -> np.ndarray:
    """Pixels within BAND_RATIO of the diagonal from the true outline."""
    r = max(1, round(BAND_RATIO * float(np.hypot(*truth.shape))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    t = truth.astype(np.uint8)
    return (cv2.dilate(t, kernel) - cv2.erode(t, kernel)) > 0


def boundary_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    band = boundary_band(truth)
    return dice_iou(pred & band, truth & band)[1]


def boundary_f(pred: np.ndarray, truth: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE) -> float:
    """F-measure of the predicted outline against the true one: an outline pixel counts as matched
    when the other outline is within ``tolerance`` px (Perazzi et al. 2016, DAVIS' boundary F)."""

    def outline(mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.uint8)
        return (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0

    p, t = outline(pred), outline(truth)
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    precision = (p & (cv2.dilate(t.astype(np.uint8), k) > 0)).sum() / p.sum()
    recall = (t & (cv2.dilate(p.astype(np.uint8), k) > 0)).sum() / t.sum()
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def saliency_scores(alpha: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """One photo: Dice and IoU at SCORE_SIZE, MAE of the soft alpha and boundary F at the stored size.
    ``alpha`` float in [0, 1], ``truth`` boolean, both at the photo's size."""
    small = (SCORE_SIZE, SCORE_SIZE)
    a128 = cv2.resize(alpha.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.5
    t128 = cv2.resize(truth.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.5
    dice, iou = dice_iou(a128, t128)
    return {"dice": dice, "iou": iou, "mae": float(np.abs(alpha - truth).mean()),
            "boundary_f": boundary_f(alpha > 0.5, truth)}


def ecssd_names(folder: Path) -> list[str]:
    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise FileNotFoundError(f"ECSSD not found at {folder} (images/ and masks/; see ../shared/datasets)")
    return sorted(p.stem for p in (folder / "images").glob("*.jpg") if (folder / "masks" / f"{p.stem}.png").exists())


def load_ecssd(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(Image.open(folder / "images" / f"{name}.jpg").convert("RGB"))
    truth = np.asarray(Image.open(folder / "masks" / f"{name}.png").convert("L")) > 127
    return rgb, truth


def evaluate_ecssd(model: OnnxSegmenter, folder: Path, limit: int = 0) -> dict:
    """Mean saliency_scores over the photos, through the runtime's matting."""
    names = ecssd_names(folder)
    if limit:
        names = names[:: max(1, len(names) // limit)][:limit]
    rows = []
    for chunk in tqdm(list(batched(names, BATCH)), desc="ecssd", unit="batch", leave=False):
        pairs = [load_ecssd(folder, n) for n in chunk]
        for (rgb, truth), fg in zip(pairs, predict_foreground(model, [rgb for rgb, _ in pairs]), strict=True):
            rows.append(saliency_scores(soft_alpha(fg, rgb), truth))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {"images": len(rows), **out, "dice_min": float(np.min([r["dice"] for r in rows]))}


def summarise(
    dices: list[float], ious: list[float], accs: list[float] | None = None, bious: list[float] | None = None
) -> Scores:
    return Scores(
        images=len(dices),
        dice=float(np.mean(dices)),
        iou=float(np.mean(ious)),
        pixel_accuracy=float(np.mean(accs)) if accs else None,
        dice_min=float(np.min(dices)),
        boundary_iou=float(np.mean(bious)) if bious else None,
    )


def read_names(data: Path, split: str) -> list[str]:
    path = data / f"{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: point --data at ../shared/datasets/oxford-pets")
    return [n.strip() for n in path.read_text().splitlines() if n.strip()]


def load_pair(images: Path, trimaps: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(Image.open(images / f"{name}.jpg").convert("RGB"))
    trimap = np.asarray(Image.open(trimaps / f"{name}.png"))
    return rgb, trimap


def batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def network_batch(model: OnnxSegmenter, rgbs: list[np.ndarray]) -> np.ndarray:
    return np.stack([network_input(rgb, model.spec.input_size) for rgb in rgbs])


def predict_foreground(model: OnnxSegmenter, rgbs: list[np.ndarray]) -> np.ndarray:
    """(N, S, S) foreground probability, as the runtime computes it."""
    return model.predict(network_batch(model, rgbs))


def evaluate_split(
    model: OnnxSegmenter, folder: Path, names: list[str], matting: list[tuple[str, MattingParams]], net256: bool
) -> dict[str, Scores]:
    """Scores at the network's size (if asked) and at the folder's resolution for each matting setting."""
    images, trimaps = folder / "images", folder / "trimaps"
    d256: list[float] = []
    i256: list[float] = []
    acc256: list[float] = []
    full: dict[str, tuple[list[float], list[float], None, list[float]]] = {
        label: ([], [], None, []) for label, _ in matting
    }
    for chunk in tqdm(list(batched(names, BATCH)), desc=folder.name, unit="batch", leave=False):
        pairs = [load_pair(images, trimaps, n) for n in chunk]
        raw = model.predict_raw(network_batch(model, [rgb for rgb, _ in pairs]))
        size = model.spec.input_size
        for (rgb, trimap), r in zip(pairs, raw, strict=True):
            truth = trimap != TRIMAP_BACKGROUND
            if net256:
                tnet = cv2.resize(trimap, (size, size), interpolation=cv2.INTER_NEAREST)
                d, i = dice_iou(model.spec.hard_foreground(r), tnet != TRIMAP_BACKGROUND)
                d256.append(d)
                i256.append(i)
                if model.spec.output == "trimap3":  # 3-class accuracy: only a trimap model has classes
                    acc256.append(float((r.argmax(-1) == (tnet.astype(np.int64) - 1)).mean()))
            for label, params in matting:
                alpha = soft_alpha(model.spec.foreground(r[None])[0], rgb, params)
                pred = alpha > 0.5
                d, i = dice_iou(pred, truth)
                full[label][0].append(d)
                full[label][1].append(i)
                full[label][3].append(boundary_iou(pred, truth))
    out = {label: summarise(*full[label]) for label, _ in matting}
    if net256:
        out["net256"] = summarise(d256, i256, acc256)
    return out


def evaluate(model_path: Path, data: Path, limit: int = 0, fullres: bool = True,
             ecssd: Path | None = DEFAULT_ECSSD_DIR) -> dict:
    """The pets test split (net: at the network's own size, stored, fullres) and ECSSD when present."""
    model = OnnxSegmenter(model_path)
    names = read_names(data, "test")
    names = [n for n in names if (data / "images" / f"{n}.jpg").exists()]
    if limit:
        names = names[:limit]
    t0 = time.perf_counter()
    report: dict = {"model": str(model_path), "data": str(data), "split": "test"}
    stored = evaluate_split(model, data, names, [("stored", DEFAULT_MATTING)], net256=True)
    report["net256"] = asdict(stored["net256"])
    report["stored"] = asdict(stored["stored"])
    fr_folder = data / "test-fullres"
    if fullres and fr_folder.exists():
        fr_names = sorted(p.stem for p in (fr_folder / "images").glob("*.jpg"))
        if limit:
            fr_names = fr_names[:limit]
        fr = evaluate_split(
            model,
            fr_folder,
            fr_names,
            [("guided", DEFAULT_MATTING), ("bilinear", MattingParams(refine=False))],
            net256=False,
        )
        report["fullres"] = {k: asdict(v) for k, v in fr.items()}
    if ecssd is not None and ecssd.exists():
        report["ecssd"] = evaluate_ecssd(model, ecssd, limit)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/unet.onnx"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (smoke runs)")
    p.add_argument("--no-fullres", action="store_true", help="skip the original-resolution photos")
    p.add_argument("--ecssd", type=Path, default=DEFAULT_ECSSD_DIR, help="ECSSD folder (scored when present)")
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"error: Oxford-IIIT Pet not found at {args.data} (see ../shared/datasets/README.md)", file=sys.stderr)
        return 2
    report = evaluate(args.model, args.data, args.limit, not args.no_fullres, args.ecssd)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
