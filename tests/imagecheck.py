"""Image comparison for tests: a tolerance instead of byte equality, and the failing picture kept.

On failure the actual, expected and difference images are written to tests/.failures/<name>/ so
that a person can look at what went wrong (CI keeps the folder as an artifact).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

FAILURES = Path(__file__).parent / ".failures"


def png_bytes(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    """A small photo-like image: a disc on a gradient (something for the network to find)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 90)], -1).astype(np.uint8)
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2
    img[disc] = rng.integers(150, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def save_failure(name: str, **images: np.ndarray) -> Path:
    folder = FAILURES / name
    folder.mkdir(parents=True, exist_ok=True)
    for label, arr in images.items():
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{label}.png")
    return folder


def assert_close(
    name: str, actual: np.ndarray, expected: np.ndarray, *, max_mean_abs: float, max_abs: float = 255
) -> None:
    """Mean and max absolute difference (in 0-255 units for uint8) within tolerance, else keep both."""
    a, e = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != {e.shape}"
    diff = np.abs(a - e)
    if diff.mean() > max_mean_abs or diff.max() > max_abs:
        folder = save_failure(
            name, actual=np.asarray(actual), expected=np.asarray(expected), diff=diff.astype(np.uint8)
        )
        raise AssertionError(
            f"{name}: mean |diff| {diff.mean():.3f} (max {max_mean_abs}), max |diff| {diff.max():.1f} (max {max_abs}); "
            f"pictures kept in {folder}"
        )
