"""From the network's foreground probability to a soft alpha at the photo's own resolution.

The network sees a 256-320 px squash of the photo, so its mask, blown up to 12 MP, is a blur of
10-16-pixel blocks. A fast guided filter (He & Sun 2015) takes the full-resolution photo as guide,
so the alpha's edge follows the photo's edges (fur, hair) rather than the network's grid. (The
models' own outputs become one foreground probability in ``maskq.models``: the pets trimap counts
its border band as object.)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The guided filter runs at this long side and its linear coefficients are upsampled: at 1024 px
# the cost is ~10x below a full-resolution filter with no visible difference.
WORK_LONG_SIDE = 1024
# Rows of the full-resolution photo computed at once: 256 rows of a 4000-px photo are 4 MB a plane.
STRIP_ROWS = 256


@dataclass(frozen=True)
class MattingParams:
    """Tuned on 100 Oxford-IIIT Pet test photos at original resolution with the pets model
    (foreground Dice and boundary IoU at alpha 0.5, as training/evaluate.py measures them)."""

    radius_ratio: float = 1 / 96  # guided-filter radius as a share of the work image's long side
    eps: float = 1e-2  # regularisation: lower follows image edges more tightly (and their noise)
    sharpness: float = 1.5  # contrast around 0.5 after filtering: a solid interior, a soft rim
    refine: bool = True  # False gives the plain bilinear upsampling, for comparisons


DEFAULT_MATTING = MattingParams()


def network_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) float32 in [0, 1]: the model's input contract."""
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) * (1.0 / 255.0)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Grey guided filter: mean a and b of q = a * I + b, both float32 at the guide's size."""
    mean_i, mean_p = _box(guide, r), _box(src, r)
    cov_ip = _box(guide * src, r) - mean_i * mean_p
    var_i = _box(guide * guide, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box(a, r), _box(b, r)


def soft_alpha(foreground: np.ndarray, rgb: np.ndarray, params: MattingParams = DEFAULT_MATTING) -> np.ndarray:
    """(S, S) foreground probability and the (H, W, 3) photo -> (H, W) float32 alpha in [0, 1]."""
    h, w = rgb.shape[:2]
    fg = np.asarray(foreground, dtype=np.float32)
    if not params.refine:
        return np.clip(cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    scale = min(1.0, WORK_LONG_SIDE / max(h, w))
    wh = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey_full = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    grey_work = (cv2.resize(grey_full, wh, interpolation=cv2.INTER_AREA) if scale < 1 else grey_full).astype(np.float32)
    grey_work *= 1.0 / 255.0
    fg_work = cv2.resize(fg, wh, interpolation=cv2.INTER_LINEAR)
    r = max(1, round(max(wh) * params.radius_ratio))
    a, b = guided_coefficients(grey_work, fg_work, r, params.eps)
    return _apply_in_strips(a, b, grey_full, params.sharpness)


def _apply_in_strips(a: np.ndarray, b: np.ndarray, guide: np.ndarray, sharpness: float) -> np.ndarray:
    """q = k * (a * I + b - 0.5) + 0.5 at full resolution, a and b bilinearly upsampled strip by
    strip: a 12 MP photo needs a few MB per strip instead of five 48 MB float planes at once."""
    h, w = guide.shape
    sh, sw = a.shape
    out = np.empty((h, w), np.float32)
    # cv2.resize's bilinear sampling (pixel centres aligned), expressed as remap coordinates
    xs = (np.arange(w, dtype=np.float32) + 0.5) * (sw / w) - 0.5
    rows = min(h, STRIP_ROWS)
    map_x = np.ascontiguousarray(np.broadcast_to(xs, (rows, w)))
    map_y = np.empty((rows, w), np.float32)
    k = sharpness
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        n = y1 - y0
        if (sh, sw) == (h, w):  # photos up to WORK_LONG_SIDE: the coefficients are already full size
            a_s, b_s = a[y0:y1], b[y0:y1]
        else:
            map_y[:n] = ((np.arange(y0, y1, dtype=np.float32) + 0.5) * (sh / h) - 0.5)[:, None]
            a_s = cv2.remap(a, map_x[:n], map_y[:n], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            b_s = cv2.remap(b, map_x[:n], map_y[:n], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        q = cv2.multiply(a_s, guide[y0:y1].astype(np.float32), scale=k / 255.0)
        cv2.scaleAdd(b_s, k, q, dst=q)
        q += 0.5 - 0.5 * k
        np.clip(q, 0.0, 1.0, out=out[y0:y1])
    return out


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """[0, 1] float -> 0-255, rounded and saturated (OpenCV: 8x faster than numpy at 12 MP)."""
    return cv2.convertScaleAbs(alpha, alpha=255.0)
