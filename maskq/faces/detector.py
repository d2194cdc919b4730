"""The face detector: CenterFace in ONNX Runtime, run over a pyramid of overlapping tiles.

Why this shape (numbers in ``models/faces/README.md``):
- CenterFace is fully convolutional, so one session serves every input size; the graph shipped in
  ``models/faces`` has symbolic shapes and folded weights, loaded once per process.
- Small faces need resolution and big photos cost time linearly in pixels. ``plan_scales`` picks
  the scales: a fine one within a pixel budget (so a 12 MP photo stays near its time limit) that
  upsamples small photos so that faces of 10-16 px reach the size CenterFace finds best, and
  coarse ones at 1/2 and 1/3 of it for faces too large for the fine tiles or the receptive field.
- Each scale runs in tiles of at most ``TILE`` pixels a side overlapping by ``OVERLAP``: memory
  stays bounded on 50 MP inputs and every face up to ``OVERLAP`` px wide lies whole inside at
  least one tile; larger faces are the coarse scales'. Boxes from all tiles and scales are merged
  by NMS, then boxes lying mostly inside a better box are dropped (a face found twice at two
  scales, or an eye found as a face inside a face, blurs the same pixels).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from maskq.errors import InvalidImageError, ModelUnavailableError
from maskq.faces.decode import decode_centerface, nms
from maskq.params import FACE_DEFAULT_THRESHOLD as DEFAULT_THRESHOLD

MODEL_FILES = {"fp32": Path("faces") / "centerface.onnx", "int8": Path("faces") / "centerface-int8.onnx"}
# int8 (static QDQ, see models/faces/fetch.py) is 2.6x faster on this CPU with the same recall
# (models/faces/README.md): the time it saves buys resolution, which is what finds small faces.
DEFAULT_PRECISION = "int8"
INPUT_NAME = "input.1"
OUTPUT_NAMES = ["537", "538", "539"]  # heat map, log sizes, offsets (landmarks are not needed)
# network input sides must be multiples of the deepest stride
ALIGN = 32
# longest tile side and overlap in pixels of the scaled image (see the module docstring); a 1536 px
# tile's largest activation (96 channels at half resolution) is ~0.2 GB
TILE = 1536
OVERLAP = 128
# Pixels the network may see at the fine scale: small photos are upsampled up to UPSCALE (so faces
# of 10-16 px reach the ~16-24 px CenterFace finds best), big ones are downsampled to the budget so
# that a 12 MP photo, with its coarser scales, stays near 0.6 s on 2 cores (bench/faces_speed.py).
PIXEL_BUDGETS = {"standard": 4_000_000, "high": 24_000_000}
PIXEL_BUDGET = PIXEL_BUDGETS["standard"]
UPSCALE = 1.5
# Coarser scales, as fractions of the fine one, for faces too large for the fine tiles or for the
# network's receptive field: with them, faces >= 64 px get back the 3-13 points of recall that
# upsampling by 1.5 costs them.
COARSE_FACTORS = (1 / 2, 1 / 3)
# Coarse passes see few faces and many face-like textures (ornaments, lettering): requiring this
# much more score there cuts a quarter of the unmatched detections at no cost in recall (README).
COARSE_MARGIN = 0.05
# a coarse pass is skipped when its image would be smaller than this on its longer side
COARSE_MIN_SIDE = 128
# NMS IoU across cells, tiles and scales; CenterFace's own decoder uses 0.3
NMS_IOU = 0.3
# a box with this share of its area inside a higher-scoring kept box is a duplicate
CONTAINED = 0.8


@dataclass(frozen=True, slots=True)
class Face:
    """One detection in pixels of the array given to ``detect`` (x, y top-left; w, h size)."""

    x: float
    y: float
    w: float
    h: float
    score: float

    def as_list(self, ndigits: int = 1) -> list[float]:
        """``[x, y, w, h, score]`` rounded, the shape of ``maskq faces --json``."""
        return [round(self.x, ndigits), round(self.y, ndigits), round(self.w, ndigits), round(self.h, ndigits),
                round(self.score, 3)]


def plan_scales(height: int, width: int, pixel_budget: int = PIXEL_BUDGET, upscale: float = UPSCALE) -> list[float]:
    """The resize factors to run for an image of this size, fine first."""
    fine = min(upscale, math.sqrt(pixel_budget / (height * width)))
    return [fine] + [fine * f for f in COARSE_FACTORS if max(height, width) * fine * f >= COARSE_MIN_SIDE]


def plan_thresholds(threshold: float, n_scales: int) -> list[float]:
    """One threshold per scale of ``plan_scales``, fine first; coarse ones take ``COARSE_MARGIN`` more."""
    return [threshold + (COARSE_MARGIN if i else 0.0) for i in range(n_scales)]


def tile_spans(length: int, tile: int = TILE, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """``(start, size)`` of the fewest equal tiles, at most ``tile`` long, that cover ``[0, length)``
    with at least ``overlap`` px shared by neighbours. Equal sizes, rounded up to ``ALIGN``, waste
    the least work: 2049 px in 1024-px tiles would be 3 tiles (3072 px), here it is 2 of 1120."""
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(length, -(-math.ceil((length + (n - 1) * overlap) / n) // ALIGN) * ALIGN)
    step = (length - size) / (n - 1)
    return [(round(i * step), size) for i in range(n)]


def pad_to_align(rgb: np.ndarray) -> np.ndarray:
    """Zero-pad the bottom and right so both sides are multiples of ``ALIGN`` (boxes keep their pixels)."""
    ph, pw = -rgb.shape[0] % ALIGN, -rgb.shape[1] % ALIGN
    return cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0) if ph or pw else rgb


def _contained_filter(boxes: np.ndarray, order: np.ndarray, share: float) -> np.ndarray:
    """Keep, in ``order``, the boxes that do not lie mostly inside a box kept before them."""
    kept: list[int] = []
    for i in order:
        b = boxes[i]
        area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
        inside = False
        for j in kept:
            k = boxes[j]
            iw = min(b[2], k[2]) - max(b[0], k[0])
            ih = min(b[3], k[3]) - max(b[1], k[1])
            if iw > 0 and ih > 0 and iw * ih / area >= share:
                inside = True
                break
        if not inside:
            kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def merge(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NMS, then drop boxes contained in better ones; returns boxes and scores, best first."""
    if len(boxes) == 0:
        return boxes, scores
    keep = nms(boxes, scores, NMS_IOU)
    keep = _contained_filter(boxes, keep, CONTAINED)
    return boxes[keep], scores[keep]


class FaceDetector:
    """A loaded CenterFace session; thread-compatible (ORT sessions may be run concurrently)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    @classmethod
    def load(cls, models_dir: Path, intra_op_threads: int = 0, precision: str = DEFAULT_PRECISION) -> FaceDetector:
        """Open ``models_dir/faces/centerface[-int8].onnx`` once; a missing or broken file is the operator's."""
        path = Path(models_dir) / MODEL_FILES[precision]
        if not path.is_file():
            raise ModelUnavailableError(f"face model not found: {path}", path=str(path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own untyped errors for corrupt files
            raise ModelUnavailableError(f"face model cannot be loaded: {path}: {err}", path=str(path)) from err
        return cls(session)

    def _run(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """One network call on an image of any size (padded to ``ALIGN``); boxes in its pixels."""
        blob = np.ascontiguousarray(pad_to_align(rgb).transpose(2, 0, 1)[None], dtype=np.float32)
        heat, size, offset = self.session.run(OUTPUT_NAMES, {INPUT_NAME: blob})
        return decode_centerface(heat[0, 0], size[0], offset[0], threshold)

    def _detect_at(self, rgb: np.ndarray, scale: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Resize by ``scale``, run every tile, and return boxes in the pixels of ``rgb``."""
        h, w = rgb.shape[:2]
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        scaled = rgb if (sh, sw) == (h, w) else cv2.resize(rgb, (sw, sh), interpolation=interp)
        all_boxes, all_scores = [], []
        for y0, th in tile_spans(sh):
            for x0, tw in tile_spans(sw):
                boxes, scores = self._run(scaled[y0 : y0 + th, x0 : x0 + tw], threshold)
                boxes += np.array([x0, y0, x0, y0], np.float32)
                all_boxes.append(boxes)
                all_scores.append(scores)
        boxes = np.concatenate(all_boxes) / np.array([sw / w, sh / h, sw / w, sh / h], np.float32)
        return boxes, np.concatenate(all_scores)

    def detect(
        self,
        rgb: np.ndarray,
        threshold: float = DEFAULT_THRESHOLD,
        scales: list[float] | None = None,
        pixel_budget: int = PIXEL_BUDGET,
    ) -> list[Face]:
        """Every face in an RGB (or RGBA: alpha ignored) uint8 image, best score first.

        ``threshold`` applies to the fine scale, coarser ones add ``COARSE_MARGIN``. ``scales``
        overrides ``plan_scales`` (the benchmarks use it to measure each scale alone);
        ``pixel_budget`` trades time for small-face recall on large photos.
        """
        if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8 or 0 in rgb.shape[:2]:
            raise InvalidImageError(f"expected an HxWx3 uint8 image, got {rgb.dtype} {rgb.shape}")
        rgb = rgb[..., :3]
        h, w = rgb.shape[:2]
        plan = scales or plan_scales(h, w, pixel_budget)
        parts = [self._detect_at(rgb, s, t) for s, t in zip(plan, plan_thresholds(threshold, len(plan)), strict=True)]
        boxes, scores = merge(np.concatenate([b for b, _ in parts]), np.concatenate([s for _, s in parts]))
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return [
            Face(float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(s))
            for (x1, y1, x2, y2), s in zip(boxes, scores, strict=True)
            if x2 > x1 and y2 > y1
        ]
