"""tf.data pipeline over Oxford-IIIT Pet (images + trimaps, official trainval/test split).

The data set lives in ``../shared/datasets/oxford-pets`` (see its README); it is never copied into
the repository. Images are squashed to a square, the same way the runtime feeds the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from maskq.defaults import SHARED_DATASETS

DEFAULT_DATA_DIR = SHARED_DATASETS / "oxford-pets"
CACHE_SIZE = 256  # images are decoded once at this size and kept in memory; crops are cut from it
AUTOTUNE = tf.data.AUTOTUNE
BACKGROUND_LABEL = 1  # trimap 2 (background) after the shift to 0-based classes


class DatasetMissingError(FileNotFoundError):
    """The Oxford-IIIT Pet folder is absent or incomplete."""


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths; the defaults suit a small data set (about 1,500 images).

    ``max_area`` above 1 zooms out (the photo shrinks inside a plain canvas, as product shots and
    distant pets look), ``rotation`` tilts by up to that many degrees; both fill the canvas with a
    random grey labelled background. ``blur`` and ``noise`` mimic soft focus and sensor noise.
    """

    min_area: float = 0.45  # random resized crop keeps at least this share of the image
    max_area: float = 1.0
    max_aspect: float = 4 / 3
    rotation: float = 0.0  # degrees
    brightness: float = 0.15
    contrast: float = 0.25
    saturation: float = 0.3
    blur: float = 0.0  # share of images blurred (Gaussian, sigma 0.5-1.5 px)
    noise: float = 0.0  # largest std of additive Gaussian noise, images in [0, 1]
    hflip: bool = True


# Named strengths for --augment: "default" is the recipe of stages 1-3; "strong" fights the
# overfitting stage 3 showed (train Dice rising, validation flat) on the same 1,352 images.
AUGMENTS = {
    "default": Augment(),
    "strong": Augment(min_area=0.35, max_area=1.8, rotation=20.0, brightness=0.2, contrast=0.3,
                      saturation=0.4, blur=0.3, noise=0.03),
}


def check_data_dir(root: Path) -> Path:
    root = Path(root)
    needed = [root / "trainval.txt", root / "test.txt", root / "images", root / "trimaps"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DatasetMissingError(
            f"Oxford-IIIT Pet not found under {root} (missing: {', '.join(missing)}). "
            "Point --data at the folder from ../shared/datasets/oxford-pets."
        )
    return root


def read_split(root: Path, split: str) -> list[str]:
    """Names of one official split ('trainval' or 'test') present in the folder."""
    root = check_data_dir(root)
    names = [n.strip() for n in (root / f"{split}.txt").read_text().splitlines() if n.strip()]
    return [n for n in names if (root / "images" / f"{n}.jpg").exists()]


def _load_pair(root: str, size: int):
    def load(name):
        raw = tf.io.read_file(tf.strings.join([root, "/images/", name, ".jpg"]))
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
        image = tf.image.resize(image, (size, size), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        trimap = tf.io.decode_png(tf.io.read_file(tf.strings.join([root, "/trimaps/", name, ".png"])), 1)
        trimap = tf.image.resize(trimap, (size, size), method="nearest")
        labels = tf.cast(trimap, tf.int32) - 1  # trimap 1/2/3 -> classes 0/1/2
        return image, tf.cast(labels, tf.uint8)

    return load


def _transforms(n, size: int, source: int, aug: Augment, rng: tf.random.Generator):
    """One projective transform per image (output pixel -> cached input pixel): a random box of
    the photo (area share and aspect), rotated and maybe mirrored, resampled to the output size.
    Boxes larger than the photo (zoom out) keep the photo whole inside the canvas."""
    area = rng.uniform([n], aug.min_area, aug.max_area)
    log_ratio = rng.uniform([n], -tf.math.log(aug.max_aspect), tf.math.log(aug.max_aspect))
    ratio = tf.exp(log_ratio)
    h = tf.sqrt(area * ratio)
    w = tf.sqrt(area / ratio)
    # crops (side < 1) stay inside the photo; zoom-outs (side > 1) keep the photo inside the canvas
    cy = tf.minimum(h / 2, 1 - h / 2) + rng.uniform([n]) * tf.abs(1.0 - h)
    cx = tf.minimum(w / 2, 1 - w / 2) + rng.uniform([n]) * tf.abs(1.0 - w)
    theta = rng.uniform([n], -aug.rotation, aug.rotation) * (3.141592653589793 / 180.0)
    flip = tf.where(rng.uniform([n]) < 0.5, -1.0, 1.0) if aug.hflip else tf.ones([n])
    cos, sin = tf.cos(theta), tf.sin(theta)
    s_in, k = float(source), 1.0 / size
    d = 0.5 / size - 0.5  # pixel centres: u = (x + 0.5) / size - 0.5
    a0, a1 = s_in * w * cos * flip * k, -s_in * w * sin * k
    a2 = s_in * cx - 0.5 + s_in * w * (cos * flip - sin) * d
    b0, b1 = s_in * h * sin * flip * k, s_in * h * cos * k
    b2 = s_in * cy - 0.5 + s_in * h * (sin * flip + cos) * d
    zero = tf.zeros([n])
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def _gaussian_blur(img, sigma):
    radius = 3
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-(x**2) / (2.0 * sigma**2))
    k = k / tf.reduce_sum(k)
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    img = tf.nn.depthwise_conv2d(img, kx, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(img, ky, [1, 1, 1, 1], "SAME")


def photometric(img, n, aug: Augment, rng: tf.random.Generator):
    """Saturation, contrast, brightness, then soft focus and sensor noise; float images in [0, 1]."""
    b = rng.uniform([n, 1, 1, 1], -aug.brightness, aug.brightness)
    c = rng.uniform([n, 1, 1, 1], 1 - aug.contrast, 1 + aug.contrast)
    s = rng.uniform([n, 1, 1, 1], 1 - aug.saturation, 1 + aug.saturation)
    grey = tf.reduce_mean(img, axis=-1, keepdims=True)
    img = grey + (img - grey) * s
    mean = tf.reduce_mean(img, axis=[1, 2, 3], keepdims=True)
    img = (img - mean) * c + mean + b
    if aug.blur > 0:
        blurred = _gaussian_blur(img, rng.uniform([], 0.5, 1.5))
        img = tf.where(rng.uniform([n, 1, 1, 1]) < aug.blur, blurred, img)
    if aug.noise > 0:
        img = img + rng.normal(tf.shape(img)) * rng.uniform([n, 1, 1, 1], 0.0, aug.noise)
    return tf.clip_by_value(img, 0.0, 1.0)


def _augment_batch(size: int, source: int, aug: Augment, seed: int):
    rng = tf.random.Generator.from_seed(seed)

    def augment(images, labels):
        n = tf.shape(images)[0]
        transforms = _transforms(n, size, source, aug, rng)
        canvas = rng.uniform([], 0.0, 1.0)  # one plain grey per batch behind zoom-outs and tilts
        img = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32) / 255.0, transforms=transforms, output_shape=[size, size],
            fill_value=canvas, interpolation="BILINEAR", fill_mode="CONSTANT")
        lab = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(labels, tf.float32), transforms=transforms, output_shape=[size, size],
            fill_value=float(BACKGROUND_LABEL), interpolation="NEAREST", fill_mode="CONSTANT")
        return photometric(img, n, aug, rng), tf.cast(lab, tf.int32)

    return augment


def _resize_batch(size: int):
    def resize(images, labels):
        img = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True) / 255.0
        lab = tf.image.resize(tf.cast(labels, tf.int32), (size, size), method="nearest")
        return tf.clip_by_value(img, 0.0, 1.0), lab

    return resize


def make_dataset(
    root: Path,
    names: list[str],
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augment: Augment | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 1], int32 labels HxWx1); decoded once and cached in memory."""
    root = check_data_dir(root)
    if not names:
        raise DatasetMissingError(f"no images of the requested split found under {root}")
    ds = tf.data.Dataset.from_tensor_slices(names)
    source = max(CACHE_SIZE, image_size)
    ds = ds.map(_load_pair(str(root), source), num_parallel_calls=AUTOTUNE).cache()
    if training:
        ds = ds.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(_augment_batch(image_size, source, augment or Augment(), seed), num_parallel_calls=1)
    else:
        ds = ds.batch(batch_size).map(_resize_batch(image_size), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
