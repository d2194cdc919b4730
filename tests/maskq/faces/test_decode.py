"""CenterFace decoding and NMS on hand-made tensors whose boxes are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maskq.faces.decode import STRIDE, box_iou, decode_centerface, nms
from maskq.faces.detector import ALIGN, COARSE_MARGIN, merge, plan_scales, plan_thresholds, tile_spans


def centerface_outputs(h: int, w: int, faces: list[tuple[float, float, float, float, float]]):
    """Heat map, log-size and offset tensors that encode ``faces`` = (cx, cy, bw, bh, score) in pixels."""
    heat = np.zeros((h, w), np.float32)
    scale = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    for cx, cy, bw, bh, score in faces:
        gx, gy = cx / STRIDE - 0.5, cy / STRIDE - 0.5
        ix, iy = int(math.floor(gx)), int(math.floor(gy))
        heat[iy, ix] = score
        offset[:, iy, ix] = (gy - iy, gx - ix)
        scale[:, iy, ix] = (math.log(bh / STRIDE), math.log(bw / STRIDE))
    return heat, scale, offset


def test_decode_recovers_known_boxes() -> None:
    faces = [(50.0, 30.0, 20.0, 24.0, 0.9), (130.5, 70.25, 64.0, 80.0, 0.6)]
    heat, scale, offset = centerface_outputs(32, 48, faces)
    boxes, scores = decode_centerface(heat, scale, offset, threshold=0.5)
    order = np.argsort(-scores)
    expected = np.array([[cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2] for cx, cy, bw, bh, _ in faces])
    np.testing.assert_allclose(boxes[order], expected, atol=1e-3)
    np.testing.assert_allclose(scores[order], [0.9, 0.6], atol=1e-6)


def test_decode_threshold_is_strict_and_empty_is_well_shaped() -> None:
    heat, scale, offset = centerface_outputs(8, 8, [(10, 10, 8, 8, 0.5)])
    boxes, scores = decode_centerface(heat, scale, offset, threshold=0.5)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    boxes, _ = decode_centerface(heat, scale, offset, threshold=0.49)
    assert boxes.shape == (1, 4)


def test_iou_of_known_pairs() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.25], atol=1e-6)


def test_nms_keeps_the_best_of_each_cluster() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [51, 50, 61, 60], [100, 0, 110, 10]], np.float32
    )
    scores = np.array([0.7, 0.9, 0.5, 0.8, 0.1], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [1, 3, 4]
    # a looser threshold keeps the overlapping pairs (IoU 0.68 and 0.82)
    assert sorted(nms(boxes, scores, 0.9).tolist()) == [0, 1, 2, 3, 4]


def test_merge_drops_a_box_inside_a_better_one() -> None:
    boxes = np.array([[0, 0, 100, 100], [30, 30, 50, 50], [90, 90, 130, 130]], np.float32)
    scores = np.array([0.9, 0.95, 0.5], np.float32)
    kept, kept_scores = merge(boxes, scores)
    # the small box scores higher, so it is kept first; the big one overlaps it by IoU 0.04 and
    # does not lie inside it, so it stays; the third is mostly outside both
    assert kept.tolist() == boxes[[1, 0, 2]].tolist()
    inner_second = merge(boxes, np.array([0.95, 0.9, 0.5], np.float32))[0]
    assert inner_second.tolist() == boxes[[0, 2]].tolist()
    assert kept_scores.tolist() == pytest.approx([0.95, 0.9, 0.5])


@pytest.mark.parametrize("length", [1, 500, 1024, 1025, 2049, 3000, 8000])
def test_tiles_cover_with_overlap(length: int) -> None:
    spans = tile_spans(length, tile=1024, overlap=128)
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
    for (a, size), (b, _) in zip(spans, spans[1:], strict=False):
        assert a + size - b >= 128  # overlap: a face up to 128 px lies whole in one tile
    for _, size in spans:
        assert size <= 1024 and (size % ALIGN == 0 or len(spans) == 1)
    assert len(spans) == (1 if length <= 1024 else -(-(length - 128) // (1024 - 128)))


def test_plan_scales() -> None:
    # a small photo is upsampled up to the cap; a 12 MP one is brought down to the budget
    assert plan_scales(480, 640, pixel_budget=4_000_000, upscale=1.5) == pytest.approx([1.5, 0.75, 0.5])
    fine, half, third = plan_scales(3000, 4000, pixel_budget=4_000_000, upscale=1.5)
    assert fine * fine * 12e6 == pytest.approx(4e6)
    assert half == pytest.approx(fine / 2) and third == pytest.approx(fine / 3)
    # coarse passes that would leave almost nothing to look at are skipped
    assert plan_scales(100, 120, upscale=1.5) == pytest.approx([1.5])


def test_plan_thresholds_ask_more_of_the_coarse_scales() -> None:
    t = 0.25
    assert plan_thresholds(t, 3) == pytest.approx([t, t + COARSE_MARGIN, t + COARSE_MARGIN])
    assert plan_thresholds(t, 1) == pytest.approx([t])
