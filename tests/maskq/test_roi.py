"""The region of interest: its syntax, its checks against the image, and the pipeline cutting out
the chosen one of two real objects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from maskq.errors import InvalidParameterError
from maskq.params import parse_params
from maskq.pipeline import context_box, roi_in_view
from maskq.roi import parse_roi
from tests.imagecheck import save_failure
from tests.maskq.conftest import SAMPLES, to_bytes


@pytest.mark.parametrize("value, box", [
    ("10,20,110,220", (10, 20, 110, 220)),
    ("10px 20px 110px 220px", (10, 20, 110, 220)),
    ("10%,20%,90%,80%", (40, 60, 360, 240)),
    ("0% 0% 100% 100%", (0, 0, 400, 300)),
    ([10, "20", "50%", 220.4], (10, 20, 200, 220)),
    ("10,20,5000,5000", (10, 20, 400, 300)),  # clipped to the image
    ("25%,0,300,50%", (100, 0, 300, 150)),  # units may mix
])
def test_pixels_and_percent(value, box):
    assert parse_roi(value).box(400, 300) == box


@pytest.mark.parametrize("value", [
    "1,2,3", "1,2,3,4,5", "a,b,c,d", "10,10,5,20", "10,10,20,10", "0,0,120%,50%", "-5,0,10,10", "", [1, 2, 3, True],
    5, {"x1": 1}, "10%,10%,10%,90%",
])
def test_malformed_or_empty_is_invalid_parameter_naming_roi(value):
    with pytest.raises(InvalidParameterError) as e:
        parse_params("remove", {"roi": value})
    assert e.value.field == "roi"


@pytest.mark.parametrize("value", ["500,0,600,100", "0,300,100,400", "80%,0,250,10"])
def test_outside_the_image_is_invalid_once_its_size_is_known(value):
    roi = parse_roi(value)  # well formed ...
    with pytest.raises(InvalidParameterError) as e:
        roi.box(400, 300)  # ... but it holds no pixel of this image
    assert e.value.field == "roi" and "400x300" in e.value.message


def test_the_context_and_the_roi_in_the_networks_view():
    assert context_box((100, 100, 200, 150), 400, 300) == (90, 90, 210, 160)
    assert context_box((0, 0, 400, 300), 400, 300) == (0, 0, 400, 300)
    rows, cols = roi_in_view((100, 100, 200, 150), (90, 90, 210, 160), 320)
    assert (cols.start, cols.stop) == (26, 294) and (rows.start, rows.stop) == (45, 275)


def two_objects() -> tuple[bytes, dict[str, tuple[int, int, int, int]]]:
    """Two real photos (a cat, a coffee cup) side by side on a plain grey background."""
    cat = Image.open(SAMPLES / "chelsea.jpg").convert("RGB")
    cup = Image.open(SAMPLES / "coffee.jpg").convert("RGB")
    cup = cup.resize((round(cup.width * cat.height / cup.height), cat.height))
    gap = 40
    w, h = cat.width + cup.width + 3 * gap, cat.height + 2 * gap
    canvas = Image.new("RGB", (w, h), (200, 200, 200))
    canvas.paste(cat, (gap, gap))
    canvas.paste(cup, (cat.width + 2 * gap, gap))
    # the cat's face, and the cup with its saucer: inside each photo, what either mask must hold
    boxes = {"cat": (gap + 100, gap + 60, gap + 350, gap + 250),
             "cup": (cat.width + 2 * gap + 160, gap + 40, cat.width + 2 * gap + 400, gap + 250)}
    return to_bytes(canvas, "PNG"), boxes


def matte_of(pipeline, data: bytes, params: dict) -> tuple[np.ndarray, float]:
    r = pipeline.process(data, "mask", params)
    return np.asarray(Image.open(io.BytesIO(r.data)), np.float32) / 255.0, r.confidence


def region(m: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = box
    return float(m[y1:y2, x1:x2].mean())


@pytest.mark.parametrize("side", ["left", "right"])
def test_roi_cuts_out_the_chosen_object(pipeline, side):
    data, boxes = two_objects()
    w, h = Image.open(io.BytesIO(data)).size
    half = w // 2
    roi = f"0,0,{half},{h}" if side == "left" else "50%,0%,100%,100%"  # pixels one way, percent the other
    chosen, other = ("cat", "cup") if side == "left" else ("cup", "cat")
    m, confidence = matte_of(pipeline, data, {"roi": roi})
    outside = m[:, half:] if side == "left" else m[:, : round(w * 0.5)]
    found = region(m, boxes[chosen])
    # the boxes hold the object and the parts that belong to it (the saucer, dark and partly missed): 0.5
    ok = outside.max() == 0.0 and region(m, boxes[other]) == 0.0 and found > 0.5 and confidence is not None
    assert ok, (side, float(outside.max()), found, save_failure(f"roi-{side}", photo=np.asarray(
        Image.open(io.BytesIO(data))), matte=m))
    # the chosen object is found about as well as without a roi (the network sees it bigger); with the
    # shipped general model the cup's roi loses part of the dark saucer (0.57 against 0.73 whole)
    whole, _ = matte_of(pipeline, data, {})
    assert found > region(whole, boxes[chosen]) - 0.2, save_failure(f"roi-{side}-vs-whole", roi=m, whole=whole)


def test_roi_for_every_matte_operation(pipeline, sample_bytes):
    for op in ("remove", "swap", "blur", "crop", "mask"):
        r = pipeline.process(sample_bytes["chelsea"], op, {"roi": "10%,10%,60%,90%"})
        assert r.confidence is not None, op
    cut = Image.open(io.BytesIO(pipeline.process(sample_bytes["chelsea"], "remove", {"roi": "0,0,200,300"}).data))
    assert np.asarray(cut)[:, 200:, 3].max() == 0
    crop = Image.open(io.BytesIO(pipeline.process(sample_bytes["chelsea"], "crop", {"roi": "0,0,200,300"}).data))
    assert crop.width <= 200 * 1.1 + 1  # the object's box (plus its margin) lies inside the roi
    with pytest.raises(InvalidParameterError) as e:
        pipeline.process(sample_bytes["chelsea"], "remove", {"roi": "500,0,600,100"})  # chelsea is 451 wide
    assert e.value.field == "roi"
