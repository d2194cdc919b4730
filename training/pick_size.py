"""Pick the general model's serving size on the DUTS-TR / pets hold-out (never on ECSSD).

    python -m training.pick_size --weights runs/general/best.keras --duts DIR --cache DIR 192 224 256

The network is fully convolutional, so the trained weights serve at any multiple of 32; a CNN
trained at one size sees objects at another scale when served at another, so the size that scores
best is measured, not assumed. Each size is exported to ONNX and run through the runtime (squash,
network, guided-filter matting), scored as training/evaluate.py scores ECSSD.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskq.matting import network_input, soft_alpha
from maskq.models import MODELS
from maskq.segmentation import OnnxSegmenter
from training.data import DEFAULT_DATA_DIR
from training.evaluate import TRIMAP_BACKGROUND, saliency_scores
from training.export import load_weights_at, to_onnx
from training.saliency_data import val_names


def holdout_photos(cache: Path, duts: Path, pets: Path, every: int):
    """(rgb, truth) of the hold-out photos at their stored size; pets borders count as object."""
    names = json.loads((cache / "meta.json").read_text())["names"]
    for name in sorted(val_names(names))[::every]:
        source, stem = name.split("/", 1)
        if source == "duts":
            rgb = Image.open(duts / "DUTS-TR-Image" / f"{stem}.jpg")
            truth = np.asarray(Image.open(duts / "DUTS-TR-Mask" / f"{stem}.png").convert("L")) > 127
        else:
            rgb = Image.open(pets / "images" / f"{stem}.jpg")
            truth = np.asarray(Image.open(pets / "trimaps" / f"{stem}.png")) != TRIMAP_BACKGROUND
        yield np.asarray(rgb.convert("RGB")), truth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sizes", nargs="+", type=int)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--duts", type=Path, required=True)
    p.add_argument("--pets", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--cache", type=Path, required=True, help="the training cache (its meta.json names the photos)")
    p.add_argument("--every", type=int, default=2, help="score every Nth hold-out photo")
    args = p.parse_args(argv)
    photos = list(holdout_photos(args.cache, args.duts, args.pets, args.every))
    for size in args.sizes:
        spec = dataclasses.replace(MODELS["general"], input_size=size)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "general.onnx"
            path.write_bytes(to_onnx(load_weights_at(args.weights, spec), spec).SerializeToString())
            seg = OnnxSegmenter(path, spec)
            rows, t0 = [], time.perf_counter()
            for rgb, truth in photos:
                rows.append(saliency_scores(soft_alpha(seg.predict(network_input(rgb, size)[None])[0], rgb), truth))
        scores = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
        print(json.dumps({"size": size, "photos": len(rows), **scores,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
