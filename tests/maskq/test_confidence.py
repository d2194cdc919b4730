"""The mask confidence: its signals on synthetic probability maps, and the pipeline's confidence on
real photos (the bench, bench/confidence.py, measures how well it finds bad masks)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from maskq import confidence as conf

S = 320  # the general model's output size


def square(size: int = S, side: float = 0.5, soft: float = 2.0, at: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """A clean object: a square of ``side`` of the frame at ``at`` (centre), with a rim ``soft`` px wide."""
    p = np.zeros((size, size), np.float32)
    half = side * size / 2
    cy, cx = at[0] * size, at[1] * size
    y0, y1 = max(0, round(cy - half)), min(size, round(cy + half))
    x0, x1 = max(0, round(cx - half)), min(size, round(cx + half))
    p[y0:y1, x0:x1] = 1.0
    if soft:
        p = cv2.GaussianBlur(p, (0, 0), soft, borderType=cv2.BORDER_REPLICATE)
    return p


def speckled(seed: int = 0) -> np.ndarray:
    """The same square, plus blobs of half-sure object scattered over the background."""
    p = square()
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((S, S)).astype(np.float32), (0, 0), 3)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.maximum(p, np.clip((noise - 0.45) * 3, 0, 0.95))


def test_a_clean_square_is_trusted():
    s = conf.signals(square())
    assert s["band"] < 8 and s["uncertain"] < 0.05 and s["border"] == 0 and s["scatter"] == 0 and s["parts"] == 1
    assert 1.0 < s["compact"] < 1.35 and s["margin"] > 0.95  # a square is 4/pi = 1.27
    assert conf.mask_confidence(square()) > 0.8


def test_speckles_lower_it():
    clean, noisy = conf.signals(square()), conf.signals(speckled())
    assert noisy["uncertain"] > 3 * clean["uncertain"] and noisy["compact"] > 5 * clean["compact"]
    assert noisy["margin"] < clean["margin"] and noisy["band"] > clean["band"]
    assert conf.mask_confidence(speckled()) < conf.mask_confidence(square()) - 0.3


def test_a_blurred_outline_lowers_it():
    sharp, fuzzy = square(soft=1.5), square(soft=12)
    assert conf.signals(fuzzy)["band"] > 3 * conf.signals(sharp)["band"]
    assert conf.signals(fuzzy)["uncertain"] > 3 * conf.signals(sharp)["uncertain"]
    assert conf.mask_confidence(fuzzy) < conf.mask_confidence(sharp)


def test_border_touching_is_seen():
    inside, cut = conf.signals(square()), conf.signals(square(side=0.6, at=(0.5, 0.9)))
    assert inside["border"] == 0 and 0.1 < cut["border"] < 0.3
    assert conf.mask_confidence(square(side=0.6, at=(0.5, 0.9))) <= conf.mask_confidence(square(side=0.6))


@pytest.mark.parametrize("side", [0.05, 0.995])
def test_an_implausible_size_lowers_it(side):
    # the signal sees it; the combination uses it only if the fit picks it (it did not on the
    # hold-out: there, object size says little about the mask's quality)
    odd = conf.signals(square(side=side, soft=1.0))
    assert odd["area_extreme"] > conf.signals(square())["area_extreme"] + 3
    if "area_extreme" in conf.COEFFICIENTS:
        assert conf.mask_confidence(square(side=side, soft=1.0)) < conf.mask_confidence(square(soft=1.0))


def test_nothing_found_is_not_trusted():
    empty = np.full((S, S), 0.05, np.float32)
    s = conf.signals(empty)
    assert s["scatter"] == 1.0 and s["parts"] == 0 and s["area"] == 0
    assert conf.mask_confidence(empty) == 0.0


# what each signal means: high is bad news for all but margin (decisive pixels are good news)
GOOD_NEWS = {"margin"}


def test_every_coefficient_pushes_the_way_its_signal_means():
    assert 2 <= len(conf.COEFFICIENTS) <= 5  # a few signals, each explainable
    for name, coef in conf.COEFFICIENTS.items():
        assert name in conf.signals(square())
        assert (coef > 0) == (name in GOOD_NEWS), (name, coef)


def test_in_range_and_cheap():
    rng = np.random.default_rng(1)
    maps = [square(), speckled(), rng.random((S, S)).astype(np.float32), np.ones((S, S), np.float32),
            np.zeros((S, S), np.float32), square()[:40, :300]]
    for p in maps:
        assert 0.0 <= conf.mask_confidence(p) <= 1.0
    p = speckled()
    costs = []
    for _ in range(20):
        t0 = time.thread_time()  # CPU time of this thread: other processes on a loaded machine do not count
        conf.mask_confidence(p)
        costs.append(time.thread_time() - t0)
    # the budget is 5 ms per photo; the map is the network's output, whatever the photo's size
    assert min(costs) < 0.005 * 2, costs


def test_the_pipeline_gives_every_matte_result_a_confidence(pipeline, sample_bytes):
    for op in ("mask", "remove", "swap", "blur", "crop"):
        r = pipeline.process(sample_bytes["chelsea"], op, {})
        assert r.confidence is not None and 0.0 <= r.confidence <= 1.0, op
        assert r.review is (r.confidence < pipeline.settings.review_below)
        assert "confidence" in r.timings
    assert pipeline.process(sample_bytes["chelsea"], "faceblur", {}).confidence is None
    with_bg = pipeline.process(sample_bytes["chelsea"], "faceblur", {"background": "blur"})
    assert with_bg.confidence is not None


def test_review_below_per_job(pipeline, sample_bytes):
    always = pipeline.process(sample_bytes["coffee"], "mask", {"review_below": 1.0})
    never = pipeline.process(sample_bytes["coffee"], "mask", {"review_below": 0.0})
    assert always.review is True and never.review is False
    assert always.confidence == never.confidence
