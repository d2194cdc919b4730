"""Pictures a person looks at: training curves, and test photos with truth and prediction.

python -m training.plots --runs runs --model models/unet.onnx --out models
python -m training.plots --logs models/general-training-log-*.csv --model models/general.onnx --out models

The pets model's grid shows pets test photos at original resolution; the general model's shows
ECSSD photos (../shared/datasets/ecssd-dev), which it never saw in training.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from maskq.matting import soft_alpha  # noqa: E402
from maskq.models import spec_for_file  # noqa: E402
from maskq.segmentation import OnnxSegmenter  # noqa: E402
from training.evaluate import (  # noqa: E402
    DEFAULT_DATA_DIR,
    DEFAULT_ECSSD_DIR,
    TRIMAP_BACKGROUND,
    dice_iou,
    ecssd_names,
    load_ecssd,
    predict_foreground,
)


def read_log(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_curves(stage_logs: list[tuple[str, Path]], out: Path) -> None:
    """Loss and foreground Dice per epoch, the stages one after the other (the pets model's logs
    name it fg_dice, the general model's alpha_dice: training.losses)."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    title = "loss"
    for label, path in stage_logs:
        rows = read_log(path)
        key = "fg_dice" if "fg_dice" in rows[0] else "alpha_dice"
        title = "loss (cross-entropy + Dice)" if key == "fg_dice" else "loss (edge-weighted BCE + IoU, + side outputs)"
        epochs = [offset + r["epoch"] + 1 for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], label=f"{label} train")
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "--", label=f"{label} val")
        ax_dice.plot(epochs, [r[key] for r in rows], label=f"{label} train")
        ax_dice.plot(epochs, [r[f"val_{key}"] for r in rows], "--", label=f"{label} val")
        offset = epochs[-1] if epochs else offset
    ax_loss.set(title=title, xlabel="epoch", yscale="log")
    ax_dice.set(title="foreground Dice", xlabel="epoch", ylim=(0.5, 1.0))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def pets_photos(data: Path, count: int):
    folder = data / "test-fullres"
    names = sorted(p.stem for p in (folder / "images").glob("*.jpg"))
    for name in names[:: max(1, len(names) // count)][:count]:
        rgb = np.asarray(Image.open(folder / "images" / f"{name}.jpg").convert("RGB"))
        yield name, rgb, np.asarray(Image.open(folder / "trimaps" / f"{name}.png")) != TRIMAP_BACKGROUND


def ecssd_photos(folder: Path, count: int):
    names = ecssd_names(folder)
    for name in names[:: max(1, len(names) // count)][:count]:
        yield (name, *load_ecssd(folder, name))


def plot_grid(model_path: Path, photos, out: Path, count: int = 8) -> None:
    """Photo, truth, predicted soft alpha, and the cut-out, for spread-out test photos."""
    model = OnnxSegmenter(model_path)
    fig, axes = plt.subplots(count, 4, figsize=(10, 2.4 * count))
    for row, (name, rgb, truth) in zip(axes, photos, strict=True):
        alpha = soft_alpha(predict_foreground(model, [rgb])[0], rgb)
        dice = dice_iou(alpha > 0.5, truth)[0]
        cut = (rgb * alpha[..., None] + 255 * (1 - alpha[..., None])).astype(np.uint8)
        for ax, img, title in zip(
            row, (rgb, truth, alpha, cut), (name, "truth", f"alpha (Dice {dice:.3f})", "cut-out"), strict=True
        ):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run folders with a log.csv each")
    p.add_argument("--logs", type=Path, nargs="*", help="training logs (CSV) in stage order, instead of --runs")
    p.add_argument("--model", type=Path, default=Path("models/unet.onnx"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--ecssd", type=Path, default=DEFAULT_ECSSD_DIR)
    p.add_argument("--out", type=Path, default=Path("models"))
    args = p.parse_args(argv)
    general = spec_for_file(args.model).name == "general"
    prefix = "general-" if general else ""
    if args.logs:
        logs = [(path.stem.removeprefix("general-training-log-"), path) for path in args.logs]
    else:
        logs = [(d.name, d / "log.csv") for d in sorted(args.runs.iterdir()) if (d / "log.csv").exists()]
    if logs:
        plot_curves(logs, args.out / f"{prefix}training-curves.png")
    source = args.ecssd / "images" if general else args.data / "test-fullres"
    if not source.exists():
        print(f"skipping the prediction grid: {source} not found", file=sys.stderr)
    elif general:
        plot_grid(args.model, ecssd_photos(args.ecssd, 8), args.out / "general-ecssd-predictions.png")
    else:
        plot_grid(args.model, pets_photos(args.data, 8), args.out / "test-predictions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
