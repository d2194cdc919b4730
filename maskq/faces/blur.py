"""The face anonymisation itself: a pure function from an image and face boxes to a new image.

For each face, the box is grown by ``params.scale`` about its centre and an ellipse inscribed in
that grown box is blended with the replacement (blur, pixelate or solid colour). The ellipse's edge
is feathered so no hard seam shows, and the blend weight is exactly zero outside the grown box, so
every pixel outside the grown boxes keeps its value to the bit (tested). The alpha channel of an
RGBA input is passed through untouched: anonymising changes what a face looks like, not where the
picture is transparent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from maskq.errors import InvalidImageError
from maskq.faces.detector import Face
from maskq.params import FaceBlurParams

# The Gaussian is run on a copy shrunk so that its sigma is this many pixels, then enlarged again:
# the same look as a full-size Gaussian at a fraction of the cost for big faces (sigma 60 px on a
# 600 px face would need a 361-tap kernel), and the shrink throws detail away for good.
WORK_SIGMA = 2.0


def grown_box(face: Face, scale: float, height: int, width: int) -> tuple[int, int, int, int]:
    """The face box grown by ``scale`` about its centre, as integer ``x1, y1, x2, y2`` in the image."""
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    hw, hh = face.w * scale / 2, face.h * scale / 2
    x1, y1 = max(0, math.floor(cx - hw)), max(0, math.floor(cy - hh))
    x2, y2 = min(width, math.ceil(cx + hw)), min(height, math.ceil(cy + hh))
    return x1, y1, x2, y2


def ellipse_weight(face: Face, scale: float, feather: float, box: tuple[int, int, int, int]) -> np.ndarray:
    """Blend weight in [0, 1] over ``box``: 1 inside the ellipse, ramping to 0 over its outer rim.

    ``feather`` is the rim's width as a fraction of the ellipse's radius; 0 gives a hard edge.
    """
    x1, y1, x2, y2 = box
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    a, b = max(face.w * scale / 2, 0.5), max(face.h * scale / 2, 0.5)
    xs = (np.arange(x1, x2, dtype=np.float32) + 0.5 - cx) / a
    ys = (np.arange(y1, y2, dtype=np.float32) + 0.5 - cy) / b
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    if feather <= 0:
        return (r <= 1).astype(np.float32)
    return np.clip((1.0 - r) / feather, 0.0, 1.0)


def _blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of about ``sigma`` px, computed on a shrunk copy (see ``WORK_SIGMA``)."""
    h, w = crop.shape[:2]
    shrink = max(1.0, sigma / WORK_SIGMA)
    sw, sh = max(1, round(w / shrink)), max(1, round(h / shrink))
    small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA) if shrink > 1 else crop
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=min(sigma, WORK_SIGMA), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) if shrink > 1 else small


def _pixelate(crop: np.ndarray, cells: int) -> np.ndarray:
    """Mosaic with ``cells`` cells across the longer side of the crop."""
    h, w = crop.shape[:2]
    n = cells / max(h, w)
    small = cv2.resize(crop, (max(1, round(w * n)), max(1, round(h * n))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def replacement(crop: np.ndarray, face: Face, params: FaceBlurParams) -> np.ndarray:
    """What the face is replaced with, over the whole grown box (the ellipse weight masks it)."""
    if params.mode == "blur":
        sigma = params.strength * max(face.w, face.h) * params.scale
        return _blur(crop, max(sigma, 0.5))
    if params.mode == "pixelate":
        return _pixelate(crop, params.pixels)
    return np.broadcast_to(np.asarray(params.rgb, np.uint8), crop.shape)


def anonymize(image: np.ndarray, faces: Sequence[Face], params: FaceBlurParams) -> np.ndarray:
    """A copy of ``image`` (HxWx3 RGB or HxWx4 RGBA, uint8) with every face replaced.

    Faces are applied one after the other, so overlapping faces compound (a face inside a group
    gets the stronger of the effects, never a seam). The output has the input's shape and dtype.
    """
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise InvalidImageError(f"expected an HxWx3 or HxWx4 uint8 image, got {image.dtype} {image.shape}")
    out = image.copy()
    height, width = image.shape[:2]
    for face in faces:
        box = grown_box(face, params.scale, height, width)
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            continue
        region = out[y1:y2, x1:x2, :3]
        weight = ellipse_weight(face, params.scale, params.feather, box)[..., None]
        effect = replacement(np.ascontiguousarray(region), face, params).astype(np.float32)
        blended = region.astype(np.float32) * (1.0 - weight) + effect * weight
        out[y1:y2, x1:x2, :3] = np.where(weight > 0, np.rint(blended), region).astype(np.uint8)
    return out
