"""CenterFace heat-map decoding and non-maximum suppression, in plain numpy.

Kept apart from the ONNX session so that it can be tested on hand-made tensors with known boxes,
and so that tiling and merging (``detector.py``) reuse the same NMS. Boxes are ``x1, y1, x2, y2``
floats throughout; the public ``Face`` (x, y, w, h) is made only at the edge of the package.
"""

from __future__ import annotations

import numpy as np

# CenterFace's output grid is the input downsampled 4 times, and its size channels are log(size / 4).
STRIDE = 4


def decode_centerface(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn one image's CenterFace outputs into boxes in the pixels of the network input.

    ``heatmap`` is (h, w) face-centre probability, ``scale`` (2, h, w) log box height and width
    over the stride, ``offset`` (2, h, w) the sub-cell y and x offset of the centre. Every cell over
    ``threshold`` becomes one box (NMS removes the neighbours); vectorised because a crowd photo at
    a low threshold gives thousands of candidate cells and a Python loop over them costs more than
    the network.

    Returns ``(boxes, scores)``: boxes (n, 4) float32 ``x1, y1, x2, y2``, scores (n,) float32, in
    the order of the cells (not sorted).
    """
    ys, xs = np.nonzero(heatmap > threshold)
    if ys.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    h = np.exp(scale[0, ys, xs]) * STRIDE
    w = np.exp(scale[1, ys, xs]) * STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return boxes, heatmap[ys, xs].astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n, 4) and (m, 4) ``x1, y1, x2, y2`` boxes, shape (n, m)."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns the indices kept, best score first.

    Greedy NMS (not soft-NMS): for anonymisation a box either is blurred or is not, and two
    overlapping boxes on one face blur the same pixels anyway. Each round drops, in one
    vectorised step, every remaining box that overlaps the current best by more than
    ``iou_threshold``.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        if order.size == 1:
            break
        rest = order[1:]
        overlap = box_iou(boxes[best : best + 1], boxes[rest])[0]
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
