"""Face blur timing at 0.3, 2 and 12 MP: detection, anonymisation, and deface on the same pixels.

    nice -n 15 .venv/bin/python bench/faces_speed.py              # ours + deface (its venv, see faces_eval)
    nice -n 15 .venv/bin/python bench/faces_speed.py --no-deface --repeat 5

The photos are one real group photo resized (area down, linear up) to each size: the crowd photo
of ``../shared/datasets/faces`` with the most faces when the data set is there, else
``samples/astronaut.jpg``. Times are the median of ``--repeat`` runs after one warm-up, on
whatever cores ONNX Runtime gets (the default: all of them). Rounds alternate deface and ours so
that both see the same load when the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SIZES_MP = (0.3, 2.0, 12.0)
ASPECT = 4 / 3


def source_photo() -> tuple[np.ndarray, str]:
    import faces_eval
    from PIL import Image

    boxes = faces_eval.DATASET / "boxes.json"
    if boxes.is_file():
        counts = json.loads(boxes.read_text())
        stem = max(sorted(counts), key=lambda k: len(counts[k]))
        path = faces_eval.DATASET / "images" / f"{stem}.jpg"
    else:
        path = REPO / "samples" / "astronaut.jpg"
    return np.asarray(Image.open(path).convert("RGB")), path.name


def resized(rgb: np.ndarray, megapixels: float) -> np.ndarray:
    import cv2

    w = round((megapixels * 1e6 * ASPECT) ** 0.5)
    h = round(w / ASPECT)
    interp = cv2.INTER_AREA if w * h < rgb.shape[0] * rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


class Deface:
    """deface's CenterFace (full resolution, threshold 0.2) in its own venv, one process per round."""

    def __init__(self, images: dict[float, np.ndarray], tmp: Path) -> None:
        import faces_eval
        from PIL import Image

        self.runner, self.python = faces_eval.DEFACE_RUNNER, faces_eval.deface_python(faces_eval.CACHE)
        self.paths = []
        for mp, rgb in images.items():
            path = tmp / f"{mp}.png"
            Image.fromarray(rgb).save(path, compress_level=1)
            self.paths.append(str(path))

    def round(self) -> dict[float, float]:
        """One timed call per size (each size warmed up first by the runner)."""
        proc = subprocess.run([self.python, "-c", self.runner, "0.2", "warm", *self.paths],
                              check=True, capture_output=True, text=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        return {float(k): v["ms"] for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-deface", action="store_true")
    args = parser.parse_args()

    from maskq.defaults import MODELS_DIR
    from maskq.faces.blur import anonymize
    from maskq.faces.detector import FaceDetector, plan_scales
    from maskq.params import FaceBlurParams

    photo, name = source_photo()
    images = {mp: resized(photo, mp) for mp in SIZES_MP}
    detector = FaceDetector.load(MODELS_DIR)
    params = FaceBlurParams()
    faces = {mp: detector.detect(rgb, threshold=params.threshold) for mp, rgb in images.items()}  # warm-up
    # Rounds alternate deface and ours, so that both see the same load on a shared machine.
    times: dict[str, dict[float, list[float]]] = {k: {mp: [] for mp in images} for k in ("det", "blur", "deface")}
    with tempfile.TemporaryDirectory() as tmp:
        deface = None if args.no_deface else Deface(images, Path(tmp))
        for _ in range(args.repeat):
            if deface:
                for mp, t in deface.round().items():
                    times["deface"][mp].append(t)
            for mp, rgb in images.items():
                times["det"][mp].append(ms(lambda rgb=rgb: detector.detect(rgb, threshold=params.threshold)))
                times["blur"][mp].append(ms(lambda rgb=rgb, mp=mp: anonymize(rgb, faces[mp], params)))
    med = {k: {mp: statistics.median(v) if v else float("nan") for mp, v in d.items()} for k, d in times.items()}
    print(f"source: {name}; median of {args.repeat} alternating rounds; threshold {params.threshold}")
    header = [("size", 16), ("scales", 14), ("faces", 6), ("detect ms", 10), ("blur ms", 8), ("total ms", 9)]
    print(" ".join(f"{name:>{width}}" for name, width in [*header, ("deface ms", 10)]))
    for mp, rgb in images.items():
        scales = "+".join(f"{s:.2f}" for s in plan_scales(*rgb.shape[:2]))
        size = f"{rgb.shape[1]}x{rgb.shape[0]} {mp:g}MP"
        det, blur = med["det"][mp], med["blur"][mp]
        print(f"{size:>16} {scales:>14} {len(faces[mp]):>6} {det:10.0f} {blur:8.1f} {det + blur:9.0f}"
              f" {med['deface'][mp]:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
