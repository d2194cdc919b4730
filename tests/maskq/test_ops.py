"""The operations as pure functions on arrays, with a known matte: exact invariants, no model."""

from __future__ import annotations

import numpy as np
import pytest

from maskq.errors import InvalidParameterError
from maskq.imaging import DecodedImage
from maskq.ops import OpInput, get_operation
from maskq.ops.blur import blur_background
from maskq.ops.compose import fit_image, paste_logo, place_object
from maskq.ops.geometry import crop_box, grow_box, object_box
from maskq.params import parse_color, parse_params
from tests.imagecheck import assert_close
from tests.maskq.conftest import rng_image


def disc_scene(h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (the object) on a dark textured background, and its exact matte."""
    yy, xx = np.mgrid[:h, :w]
    matte = (((yy - 60) ** 2 + (xx - 70) ** 2) < 30**2).astype(np.float32)
    rgb = (rng_image(h, w) // 4).astype(np.uint8)
    rgb[matte > 0] = (250, 240, 10)
    return rgb, matte


def run(op: str, rgb: np.ndarray, matte: np.ndarray, assets=None, **params):
    image = DecodedImage(rgb=rgb, alpha=None, format="PNG", mode="RGB")
    operation = get_operation(op)
    return operation.apply(OpInput(image, matte, assets or {}), parse_params(op, params))


def test_object_box_and_margin():
    _, matte = disc_scene()
    assert object_box(matte) == (41, 31, 100, 90)
    assert grow_box((41, 31, 100, 90), 0.1, 160, 120) == (35, 25, 106, 96)
    assert grow_box((0, 0, 10, 10), 1.0, 12, 12) == (0, 0, 12, 12)
    assert crop_box(np.zeros((5, 7), np.float32), 0.1) == (0, 0, 7, 5)  # nothing found: whole image


def test_remove_keeps_pixels_and_sets_alpha():
    rgb, matte = disc_scene()
    out = run("remove", rgb, matte)
    np.testing.assert_array_equal(out.pixels, rgb)
    np.testing.assert_array_equal(out.alpha, (matte * 255).astype(np.uint8))


def test_remove_with_crop():
    rgb, matte = disc_scene()
    out = run("remove", rgb, matte, crop=True, margin=0.0)
    assert out.pixels.shape == (59, 59, 3) and out.alpha.shape == (59, 59)


def test_mask_soft_and_hard():
    rgb, matte = disc_scene()
    soft = matte * 0.7
    out = run("mask", rgb, soft)
    assert out.alpha is None and out.pixels.ndim == 2 and out.pixels.max() in (178, 179)  # 0.7 * 255 = 178.5
    hard = run("mask", rgb, soft, threshold=0.5)
    assert set(np.unique(hard.pixels)) == {0, 255}


def test_swap_on_colour_is_exact_outside_the_object():
    rgb, matte = disc_scene()
    out = run("swap", rgb, matte, background_color="#00ff00")
    assert out.alpha is None
    assert (out.pixels[matte == 0] == (0, 255, 0)).all()
    np.testing.assert_array_equal(out.pixels[matte == 1], rgb[matte == 1])


def test_swap_on_canvas_places_object_with_logo():
    rgb, matte = disc_scene()
    logo = DecodedImage(rgb=np.full((20, 40, 3), (255, 0, 0), np.uint8), alpha=None, format="PNG", mode="RGB")
    out = run(
        "swap",
        rgb,
        matte,
        {"logo.png": logo},
        canvas_width=400,
        canvas_height=300,
        scale=0.5,
        logo="logo.png",
        logo_position="top-left",
        logo_scale=0.1,
        logo_margin=0.0,
    )
    assert out.pixels.shape == (300, 400, 3)
    box = object_box((out.pixels[..., 2] < 100) & (out.pixels[..., 0] > 200).astype(bool) & (out.pixels[..., 1] > 200))
    x0, y0, x1, y1 = box
    assert abs((y1 - y0) - 150) <= 2 and abs((x0 + x1) / 2 - 200) <= 2  # 50 % of canvas height, centred
    assert (out.pixels[:10, :40] == (255, 0, 0)).all()  # the logo, top-left, 10 % of the width


def test_swap_missing_asset_names_field():
    rgb, matte = disc_scene()
    with pytest.raises(InvalidParameterError) as info:
        run("swap", rgb, matte, background_image="missing.jpg")
    assert info.value.field == "background_image"


def test_fit_cover_and_contain():
    img = rng_image(50, 100)
    assert fit_image(img, (60, 60), "cover", (0, 0, 0)).shape == (60, 60, 3)
    contained = fit_image(img, (60, 60), "contain", (9, 9, 9))
    assert contained.shape == (60, 60, 3) and (contained[0, 0] == 9).all() and (contained[-1, -1] == 9).all()


def test_place_object_keeps_aspect():
    rgb, matte = disc_scene()
    out_rgb, out_a = place_object(rgb, matte, (200, 100), 0.8, "bottom")
    x0, y0, x1, y1 = object_box(out_a)
    assert abs((x1 - x0) - (y1 - y0)) <= 1 and y1 == 90  # bottom, with the padding centring would leave


def test_logo_opacity():
    canvas = np.zeros((100, 100, 3), np.uint8)
    logo = np.full((10, 10, 3), 200, np.uint8)
    out = paste_logo(canvas, logo, None, "center", 0.1, 0.5, 0.0)
    assert out[50, 50, 0] == 100 and out[0, 0, 0] == 0


def test_blur_keeps_object_sharp_and_has_no_halo():
    rgb, matte = disc_scene()
    out = blur_background(rgb, matte, strength=60)
    np.testing.assert_array_equal(out[matte == 1], rgb[matte == 1])
    # just outside the disc: the naive blur smears yellow into the background, ours must not
    ring = np.zeros_like(matte, bool)
    ring[60, 101:106] = True
    import cv2

    naive = cv2.GaussianBlur(rgb, (0, 0), 8)
    assert naive[ring][:, 0].mean() > 80  # the naive blur glows
    assert out[ring][:, 0].mean() < 50  # ours stays as dark as the background
    background = matte == 0
    assert np.abs(out[background].astype(int) - rgb[background]).mean() > 5  # and it did blur


def test_blur_output_golden_within_tolerance():
    rgb, matte = disc_scene()
    out = blur_background(rgb, matte, strength=1)
    assert_close("blur-strength-1", out, rgb, max_mean_abs=20)


def test_crop_returns_original_pixels():
    rgb, matte = disc_scene()
    out = run("crop", rgb, matte, margin=0.0)
    np.testing.assert_array_equal(out.pixels, rgb[31:90, 41:100])


def test_parse_color():
    assert (
        parse_color("#fff") == (255, 255, 255)
        and parse_color("red") == (255, 0, 0)
        and parse_color([1, 2, 3]) == (1, 2, 3)
    )
    with pytest.raises(ValueError):
        parse_color("#12")


@pytest.mark.parametrize(
    "op, params, field",
    [
        ("swap", {"scale": 0}, "scale"),
        ("swap", {"fit": "stretch"}, "fit"),
        ("remove", {"margin": -1}, "margin"),
        ("mask", {"threshold": 2}, "threshold"),
        ("blur", {"format": "gif"}, "format"),
        ("crop", {"quality": 0}, "quality"),
        ("swap", {"logo_opacity": 1.5}, "logo_opacity"),
        ("nope", {}, "operation"),
    ],
)
def test_bad_params_name_the_field(op, params, field):
    with pytest.raises(InvalidParameterError) as info:
        parse_params(op, params)
    assert info.value.field == field and info.value.code == "invalid_parameter"
