"""Augmentation geometry (training/data.py) on synthetic batches: image and labels move together."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the train extra (TensorFlow)")
pytestmark = pytest.mark.tensorflow

SIZE = 64
STILL = {"min_area": 1.0, "max_area": 1.0, "max_aspect": 1.0, "rotation": 0.0, "brightness": 0.0,
         "contrast": 0.0, "saturation": 0.0, "hflip": False}


def _batch(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.zeros((n, SIZE, SIZE, 1), np.uint8)
    labels[:, :, : SIZE // 3] = 2  # a left band of border: a flip or shift shows
    return images, labels


def _augment(images, labels, seed: int = 0, **overrides):
    from training.data import Augment, _augment_batch

    aug = Augment(**{**STILL, **overrides})
    out_images, out_labels = _augment_batch(SIZE, SIZE, aug, seed)(images, labels)
    return out_images.numpy(), out_labels.numpy()


def test_no_augmentation_is_the_identity():
    images, labels = _batch()
    out_images, out_labels = _augment(images, labels)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_allclose(out_images, images / 255.0, atol=1e-5)


def test_a_flip_mirrors_image_and_labels_together():
    images, labels = _batch(8)
    out_images, out_labels = _augment(images, labels, hflip=True, seed=3)
    flipped = 0
    for i in range(8):
        mirrored = bool(np.array_equal(out_labels[i], labels[i, :, ::-1]))
        assert mirrored or np.array_equal(out_labels[i], labels[i])
        source = images[i, :, ::-1] if mirrored else images[i]
        np.testing.assert_allclose(out_images[i], source / 255.0, atol=1e-5)
        flipped += mirrored
    assert 0 < flipped < 8  # a coin per image


def test_zoom_out_keeps_the_whole_photo_on_a_background_canvas():
    images, labels = _batch()
    labels[:] = 0  # all foreground: what is left of it after the zoom is the photo's footprint
    _, out_labels = _augment(images, labels, min_area=4.0, max_area=4.0)  # box side 2: photo at half size
    share = (out_labels == 0).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(share, 0.25, atol=0.03)
    assert set(np.unique(out_labels)) == {0, 1}  # the canvas is labelled background


def test_strong_augmentation_keeps_labels_valid():
    from training.data import AUGMENTS, _augment_batch

    images, labels = _batch()
    out_images, out_labels = _augment_batch(SIZE, SIZE, AUGMENTS["strong"], 1)(images, labels)
    assert out_images.shape == (4, SIZE, SIZE, 3) and out_labels.shape == (4, SIZE, SIZE, 1)
    assert set(np.unique(out_labels.numpy())) <= {0, 1, 2}
    assert 0.0 <= float(out_images.numpy().min()) and float(out_images.numpy().max()) <= 1.0
