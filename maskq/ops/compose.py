"""Compositing on arrays: the object over a colour or an image, placed on a canvas, with a logo."""

from __future__ import annotations

import cv2
import numpy as np

from maskq.ops.geometry import anchor, object_box


def over(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """fg over bg with a float alpha in [0, 1]; all (H, W, ...) of the same size; returns uint8."""
    a = alpha[..., None] if alpha.ndim == 2 else alpha
    out = bg.astype(np.float32)
    out += (fg.astype(np.float32) - out) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (w, h) with the interpolation that suits the direction (area down, cubic up)."""
    w, h = size
    if (w, h) == (img.shape[1], img.shape[0]):
        return img
    shrink = w * h < img.shape[0] * img.shape[1]
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0, 255).astype(img.dtype) if img.dtype == np.uint8 else out


def solid(size: tuple[int, int], color: tuple[int, int, int]) -> np.ndarray:
    w, h = size
    return np.broadcast_to(np.asarray(color, np.uint8), (h, w, 3)).copy()


def fit_image(img: np.ndarray, size: tuple[int, int], fit: str, fill: tuple[int, int, int]) -> np.ndarray:
    """An image filling a (w, h) canvas: 'cover' crops the overflow, 'contain' pads with ``fill``."""
    w, h = size
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih) if fit == "cover" else min(w / iw, h / ih)
    sw, sh = max(1, round(iw * s)), max(1, round(ih * s))
    scaled = resize(img, (sw, sh))
    if fit == "cover":
        x, y = (sw - w) // 2, (sh - h) // 2
        return np.ascontiguousarray(scaled[y : y + h, x : x + w])
    canvas = solid(size, fill)
    x, y = (w - sw) // 2, (h - sh) // 2
    canvas[y : y + sh, x : x + sw] = scaled
    return canvas


def place_object(
    rgb: np.ndarray, alpha: np.ndarray, canvas: tuple[int, int], scale: float, position: str
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the object out, scale its box to ``scale`` of the canvas (keeping its aspect) and place
    it: the webshop's "product centred on 2000x2000 at 80 %". Returns canvas-sized rgb and alpha."""
    cw, ch = canvas
    box = object_box(alpha, 0.5) or (0, 0, alpha.shape[1], alpha.shape[0])
    x0, y0, x1, y1 = box
    obj_rgb, obj_a = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    s = min(cw * scale / (x1 - x0), ch * scale / (y1 - y0))
    size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
    obj_rgb, obj_a = resize(obj_rgb, size), np.clip(resize(obj_a, size), 0.0, 1.0)
    out_rgb = np.zeros((ch, cw, 3), np.uint8)
    out_a = np.zeros((ch, cw), np.float32)
    x, y = anchor(position, size, canvas, margin=round(min(cw, ch) * (1 - scale) / 2))
    out_rgb[y : y + size[1], x : x + size[0]] = obj_rgb
    out_a[y : y + size[1], x : x + size[0]] = obj_a
    return out_rgb, out_a


def paste_logo(
    canvas: np.ndarray,
    logo_rgb: np.ndarray,
    logo_alpha: np.ndarray | None,
    position: str,
    scale: float,
    opacity: float,
    margin: float,
) -> np.ndarray:
    """Paste a logo at a corner (or centre), its width a share of the canvas, with an opacity."""
    ch, cw = canvas.shape[:2]
    lh, lw = logo_rgb.shape[:2]
    w = max(1, min(cw, round(cw * scale)))
    h = max(1, min(ch, round(lh * w / lw)))
    rgb = resize(logo_rgb, (w, h))
    a = np.ones((h, w), np.float32) if logo_alpha is None else resize(logo_alpha, (w, h)).astype(np.float32) / 255.0
    x, y = anchor(position, (w, h), (cw, ch), margin=round(cw * margin))
    x, y = min(max(0, x), cw - w), min(max(0, y), ch - h)
    out = canvas.copy()
    out[y : y + h, x : x + w] = over(rgb, a * opacity, out[y : y + h, x : x + w])
    return out
