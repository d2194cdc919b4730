"""Boxes around the object: find it in the alpha, grow it by a margin, keep it inside the image."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def object_box(alpha: np.ndarray, threshold: float = 0.5) -> Box | None:
    """Bounding box of the pixels whose alpha (float in [0, 1]) exceeds the threshold, or None."""
    on = alpha > threshold
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def grow_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow by ``margin`` times the box's size on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    mx, my = round((x1 - x0) * margin), round((y1 - y0) * margin)
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def crop_box(alpha: np.ndarray, margin: float, threshold: float = 0.5) -> Box:
    """The object's box with its margin; the whole image when nothing is found (never empty)."""
    h, w = alpha.shape[:2]
    box = object_box(alpha, threshold)
    return (0, 0, w, h) if box is None else grow_box(box, margin, w, h)


def anchor(position: str, inner: tuple[int, int], outer: tuple[int, int], margin: int = 0) -> tuple[int, int]:
    """Top-left corner placing an ``inner`` (w, h) box at ``position`` inside ``outer`` (w, h)."""
    iw, ih = inner
    ow, oh = outer
    x = {"left": margin, "right": ow - iw - margin}.get(_horizontal(position), (ow - iw) // 2)
    y = {"top": margin, "bottom": oh - ih - margin}.get(_vertical(position), (oh - ih) // 2)
    return x, y


def _horizontal(position: str) -> str:
    return "left" if "left" in position else "right" if "right" in position else "center"


def _vertical(position: str) -> str:
    return "top" if "top" in position else "bottom" if "bottom" in position else "center"
