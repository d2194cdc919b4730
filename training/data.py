"""tf.data pipeline over Oxford-IIIT Pet (images + trimaps, official trainval/test split).

The data set lives in ``../shared/datasets/oxford-pets`` (see its README); it is never copied into
the repository. Images are squashed to a square, the same way the runtime feeds the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "oxford-pets"
CACHE_SIZE = 256  # images are decoded once at this size and kept in memory; crops are cut from it
AUTOTUNE = tf.data.AUTOTUNE


class DatasetMissingError(FileNotFoundError):
    """The Oxford-IIIT Pet folder is absent or incomplete."""


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths; the defaults suit a small data set (about 1,500 images)."""

    min_area: float = 0.45  # random resized crop keeps at least this share of the image
    max_aspect: float = 4 / 3
    brightness: float = 0.15
    contrast: float = 0.25
    saturation: float = 0.3
    hflip: bool = True


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


def _augment_batch(size: int, aug: Augment, seed: int):
    rng = tf.random.Generator.from_seed(seed)

    def augment(images, labels):
        n = tf.shape(images)[0]
        area = rng.uniform([n], aug.min_area, 1.0)
        log_ratio = rng.uniform([n], -tf.math.log(aug.max_aspect), tf.math.log(aug.max_aspect))
        ratio = tf.exp(log_ratio)
        h = tf.minimum(tf.sqrt(area * ratio), 1.0)
        w = tf.minimum(tf.sqrt(area / ratio), 1.0)
        y0 = rng.uniform([n]) * (1.0 - h)
        x0 = rng.uniform([n]) * (1.0 - w)
        flip = rng.uniform([n]) < 0.5 if aug.hflip else tf.zeros([n], tf.bool)
        # a flipped box (x1 < x0) mirrors the crop horizontally
        xa = tf.where(flip, x0 + w, x0)
        xb = tf.where(flip, x0, x0 + w)
        boxes = tf.stack([y0, xa, y0 + h, xb], axis=1)
        idx = tf.range(n)
        img = tf.image.crop_and_resize(tf.cast(images, tf.float32) / 255.0, boxes, idx, (size, size))
        lab = tf.image.crop_and_resize(tf.cast(labels, tf.float32), boxes, idx, (size, size), method="nearest")
        b = rng.uniform([n, 1, 1, 1], -aug.brightness, aug.brightness)
        c = rng.uniform([n, 1, 1, 1], 1 - aug.contrast, 1 + aug.contrast)
        s = rng.uniform([n, 1, 1, 1], 1 - aug.saturation, 1 + aug.saturation)
        grey = tf.reduce_mean(img, axis=-1, keepdims=True)
        img = grey + (img - grey) * s
        mean = tf.reduce_mean(img, axis=[1, 2, 3], keepdims=True)
        img = (img - mean) * c + mean + b
        return tf.clip_by_value(img, 0.0, 1.0), tf.cast(lab, tf.int32)

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
    ds = ds.map(_load_pair(str(root), max(CACHE_SIZE, image_size)), num_parallel_calls=AUTOTUNE).cache()
    if training:
        ds = ds.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(_augment_batch(image_size, augment or Augment(), seed), num_parallel_calls=1)
    else:
        ds = ds.batch(batch_size).map(_resize_batch(image_size), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
