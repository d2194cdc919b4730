"""maskq's U-Net against rembg's u2netp on the Oxford-IIIT Pet test split, same images, same metric.

    python bench/pets_vs_rembg.py [--limit N] [--fullres]

rembg runs in its own environment (bench/peers.py) and writes its masks (``only_mask=True``) to a
cache folder; both are then scored by training/evaluate.py's foreground Dice and IoU against the
trimaps (pet + border vs background), at the images' stored size, or with ``--fullres`` on the
300 photos at original resolution. maskq's masks go through its own runtime (matte > 0.5).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import CACHE, rembg_env  # noqa: E402
from maskq.matting import network_input, soft_alpha  # noqa: E402
from maskq.segmentation import OnnxSegmenter  # noqa: E402
from training.evaluate import DEFAULT_DATA_DIR, TRIMAP_BACKGROUND, boundary_iou, dice_iou, read_names  # noqa: E402

REMBG_MASKS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from PIL import Image
    from rembg import new_session, remove
    session = new_session("u2netp")
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    for name in sys.argv[3:]:
        target = out / f"{name}.png"
        if not target.exists():
            remove(Image.open(src / f"{name}.jpg").convert("RGB"), session=session, only_mask=True).save(target)
    """
)


def rembg_masks(images: Path, names: list[str], out: Path) -> None:
    python, home = rembg_env()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "U2NET_HOME": str(home)}
    for i in range(0, len(names), 200):  # bounded argument lists
        subprocess.run(
            [str(python), "-c", REMBG_MASKS, str(images), str(out), *names[i : i + 200]], check=True, env=env
        )


def score(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    d, i = dice_iou(pred, truth)
    return d, i, boundary_iou(pred, truth)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--model", type=Path, default=REPO / "models" / "unet.onnx")
    p.add_argument("--limit", type=int, default=0,
                   help="N images spread evenly over the sorted names (the first N would all be cats)")
    p.add_argument("--fullres", action="store_true", help="the 300 original-resolution photos")
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"error: Oxford-IIIT Pet not found at {args.data}", file=sys.stderr)
        return 2
    folder = args.data / "test-fullres" if args.fullres else args.data
    names = sorted(q.stem for q in (folder / "images").glob("*.jpg"))
    if not args.fullres:
        test = set(read_names(args.data, "test"))
        names = [n for n in names if n in test]
    if args.limit:
        names = names[:: max(1, len(names) // args.limit)][: args.limit]
    masks = CACHE / ("rembg-masks-fullres" if args.fullres else "rembg-masks")
    rembg_masks(folder / "images", names, masks)
    model = OnnxSegmenter(args.model)
    ours, theirs = [], []
    for name in names:
        rgb = np.asarray(Image.open(folder / "images" / f"{name}.jpg").convert("RGB"))
        truth = np.asarray(Image.open(folder / "trimaps" / f"{name}.png")) != TRIMAP_BACKGROUND
        alpha = soft_alpha(model.predict(network_input(rgb)[None])[0], rgb)
        ours.append(score(alpha > 0.5, truth))
        theirs.append(score(np.asarray(Image.open(masks / f"{name}.png").convert("L")) > 127, truth))
    print(f"Oxford-IIIT Pet test, {len(names)} images ({'original resolution' if args.fullres else 'stored size'})")
    print(f"{'model':<28} {'Dice':>7} {'IoU':>7} {'boundary IoU':>13}")
    for label, rows in (("maskq U-Net (" + args.model.name + ")", ours), ("rembg u2netp", theirs)):
        d, i, b = np.mean(rows, axis=0)
        print(f"{label:<28} {d:7.4f} {i:7.4f} {b:13.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
