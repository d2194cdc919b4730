"""The soft alpha: follows the photo's edges at full resolution, softens the border class."""

from __future__ import annotations

import cv2
import numpy as np

from maskq.matting import MattingParams, network_input, soft_alpha


def probs_from_mask(mask256: np.ndarray, border: int = 2) -> np.ndarray:
    """Class probabilities whose foreground is ``mask256``, with a border band between."""
    fg = mask256.astype(np.uint8)
    ring = cv2.dilate(fg, np.ones((2 * border + 1,) * 2, np.uint8)) - cv2.erode(
        fg, np.ones((2 * border + 1,) * 2, np.uint8)
    )
    probs = np.zeros((256, 256, 3), np.float32)
    probs[..., 0] = (fg > 0) & (ring == 0)
    probs[..., 2] = ring > 0
    probs[..., 1] = 1 - probs[..., 0] - probs[..., 2]
    return probs


def test_network_input_contract():
    x = network_input(np.full((1000, 700, 3), 255, np.uint8), 320)
    assert x.shape == (320, 320, 3) and x.dtype == np.float32 and np.allclose(x, 1.0)


def test_guided_alpha_follows_the_photo_edge_better_than_bilinear():
    # a 2000x1500 photo: a bright square on dark ground, predicted at 256x256 with its border band
    h, w = 1500, 2000
    rgb = np.full((h, w, 3), 30, np.uint8)
    rgb[400:1100, 600:1400] = 220
    truth = np.zeros((h, w), bool)
    truth[400:1100, 600:1400] = True
    # what a 256-px network sees, with the trimap's border band along the outline
    mask256 = cv2.resize(truth.astype(np.uint8), (256, 256), interpolation=cv2.INTER_AREA) > 0
    fg = 1.0 - probs_from_mask(mask256)[..., 1]  # the pets trimap's foreground: pet + border
    refined = soft_alpha(fg, rgb)
    plain = soft_alpha(fg, rgb, MattingParams(refine=False))
    assert refined.shape == (h, w) and refined.dtype == np.float32 and 0 <= refined.min() and refined.max() <= 1
    err_refined = np.abs(refined - truth).mean()
    err_plain = np.abs(plain - truth).mean()
    assert err_refined < 0.85 * err_plain, (err_refined, err_plain)
    assert refined[700, 1000] > 0.98 and refined[100, 100] < 0.02  # solid inside, clean outside
