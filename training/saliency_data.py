"""Training data for the general model: DUTS-TR (10,553 photos with object masks) and Oxford-IIIT Pet.

DUTS-TR is not in the repository nor in ``../shared``: get ``DUTS-TR-Image/`` and ``DUTS-TR-Mask/``
from the DUTS site (http://saliencydetection.net/duts/) or the GitHub repository
``aviroshkovan/DUTS-TR`` (commit e08375297908cacbca05f2d3780e0ad813490eb9) and pass the folder that
holds them as ``--duts``. No licence is stated for DUTS; its photos come from ImageNet and SUN.

Decoding 12,000 JPEGs every epoch would cost more than the network on two cores, so
``build_cache`` decodes each photo once, squashed to ``size`` x ``size`` (as the runtime feeds the
network), into two .npy files read with mmap: images (N, S, S, 3) uint8 and labels (N, S, S, 2)
uint8 holding the foreground alpha (0-255) and an "ignore" flag. The pets trimaps' border band is
"ignore": the loss learns nothing from those pixels, so the pets' hand-drawn border neither widens
nor narrows the general model's edges.

The hold-out is seeded and by name (``val_names``): about 500 DUTS-TR photos and 150 pets trainval
photos, for curves and checkpoint selection. ECSSD is never read here.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from training.data import Augment, _transforms, photometric, read_split

CACHE_SIZE = 288  # crops for 192-256 px training are cut from this; 12,000 photos take 4.5 GB
DUTS_VAL = 500
PETS_VAL = 150
IGNORE = 1  # label channel 1


def _duts_items(duts: Path) -> list[tuple[str, str, str]]:
    images = duts / "DUTS-TR-Image"
    masks = duts / "DUTS-TR-Mask"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(f"DUTS-TR not found under {duts} (needs DUTS-TR-Image/ and DUTS-TR-Mask/); "
                                "see training/saliency_data.py for where to get it")
    return [(f"duts/{p.stem}", str(p), str(masks / f"{p.stem}.png")) for p in sorted(images.glob("*.jpg"))
            if (masks / f"{p.stem}.png").exists()]


def _pets_items(pets: Path) -> list[tuple[str, str, str]]:
    return [(f"pets/{n}", str(pets / "images" / f"{n}.jpg"), str(pets / "trimaps" / f"{n}.png"))
            for n in read_split(pets, "trainval")]


def _load(item: tuple[str, str, str], size: int) -> tuple[np.ndarray, np.ndarray]:
    name, image_path, label_path = item
    image = Image.open(image_path).convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    label = np.zeros((size, size, 2), np.uint8)
    if name.startswith("pets/"):
        trimap = np.asarray(Image.open(label_path).resize((size, size), Image.NEAREST))
        label[..., 0] = np.where(trimap == 1, 255, 0)
        label[..., IGNORE] = trimap == 3
    else:
        label[..., 0] = np.asarray(Image.open(label_path).convert("L").resize((size, size), Image.BILINEAR))
    return np.asarray(image), label


def build_cache(out: Path, duts: Path, pets: Path | None, size: int = CACHE_SIZE, workers: int = 2) -> Path:
    """Decode every training photo once into ``out``; a complete cache is reused as it is."""
    meta_path = out / "meta.json"
    if meta_path.exists():
        return out
    items = _duts_items(duts) + (_pets_items(pets) if pets else [])
    out.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(out / "images.npy", "w+", np.uint8, (len(items), size, size, 3))
    labels = np.lib.format.open_memmap(out / "labels.npy", "w+", np.uint8, (len(items), size, size, 2))
    with ProcessPoolExecutor(workers) as pool:
        for i, (image, label) in enumerate(pool.map(_load, items, [size] * len(items), chunksize=32)):
            images[i], labels[i] = image, label
    images.flush()
    labels.flush()
    meta_path.write_text(json.dumps({"size": size, "names": [name for name, _, _ in items]}))
    return out


def val_names(names: list[str], seed: int = 0) -> set[str]:
    """The seeded hold-out: DUTS_VAL DUTS-TR photos and PETS_VAL pets photos."""
    rng = random.Random(seed)
    held = set()
    for prefix, count in (("duts/", DUTS_VAL), ("pets/", PETS_VAL)):
        group = sorted(n for n in names if n.startswith(prefix))
        held.update(rng.sample(group, min(count, len(group) // 5)))
    return held


def blend_alpha(labels: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """Labels whose alpha is ``(1 - weight) * truth + weight * teacher``: the distillation target.
    The truth keeps the object whole; the teacher's soft matte says how sure each outline is."""
    out = np.array(labels, copy=True)
    mixed = (1.0 - weight) * labels[..., 0].astype(np.float32) + weight * teacher.astype(np.float32)
    out[..., 0] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return out


class Cache:
    """The decoded photos, memory-mapped, with the train/validation split."""

    def __init__(self, root: Path, seed: int = 0, limit: int = 0) -> None:
        meta = json.loads((root / "meta.json").read_text())
        self.size = meta["size"]
        self.names = meta["names"]
        self.images = np.load(root / "images.npy", mmap_mode="r")
        self.labels = np.load(root / "labels.npy", mmap_mode="r")
        held = val_names(self.names, seed)
        self.train = np.array([i for i, n in enumerate(self.names) if n not in held])
        self.val = np.array([i for i, n in enumerate(self.names) if n in held])
        if limit:
            self.train, self.val = self.train[:limit], self.val[: max(1, limit // 2)]


def _batches(cache: Cache, indices: np.ndarray, batch_size: int, shuffle: bool, seed: int,
             teacher: np.ndarray | None = None, taught: np.ndarray | None = None, distill: float = 0.0):
    import tensorflow as tf

    def gen():
        rng = np.random.default_rng(seed)
        epoch = 0
        while True:
            order = rng.permutation(indices) if shuffle else indices
            stop = len(order) - (len(order) % batch_size if shuffle else 0)
            for i in range(0, stop, batch_size):
                pick = np.sort(order[i : i + batch_size])  # sorted reads are kinder to the mmap
                labels = cache.labels[pick]
                if teacher is not None:
                    rows = np.isin(pick, taught)
                    labels[rows] = blend_alpha(labels[rows], teacher[pick[rows]], distill)
                yield cache.images[pick], labels
            epoch += 1
            if not shuffle:
                return

    s = cache.size
    spec = (tf.TensorSpec((None, s, s, 3), tf.uint8), tf.TensorSpec((None, s, s, 2), tf.uint8))
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _augment(size: int, source: int, aug: Augment, seed: int):
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    def augment(images, labels):
        n = tf.shape(images)[0]
        transforms = _transforms(n, size, source, aug, rng)
        canvas = rng.uniform([], 0.0, 1.0)  # plain grey or white behind zoom-outs, as product shots have
        canvas = tf.where(rng.uniform([]) < 0.3, 1.0, canvas)
        img = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32) / 255.0, transforms=transforms, output_shape=[size, size],
            fill_value=canvas, interpolation="BILINEAR", fill_mode="CONSTANT")
        lab = tf.raw_ops.ImageProjectiveTransformV3(  # alpha 0 and "not ignored" outside the photo
            images=tf.cast(labels, tf.float32), transforms=transforms, output_shape=[size, size],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
        target = tf.concat([lab[..., :1] / 255.0, tf.cast(lab[..., 1:] > 0.5, tf.float32)], axis=-1)
        return photometric(img, n, aug, rng), target

    return augment


def _resize(size: int):
    import tensorflow as tf

    def resize(images, labels):
        img = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True) / 255.0
        lab = tf.image.resize(tf.cast(labels, tf.float32), (size, size), method="bilinear")
        target = tf.concat([lab[..., :1] / 255.0, tf.cast(lab[..., 1:] > 0.5, tf.float32)], axis=-1)
        return tf.clip_by_value(img, 0.0, 1.0), target

    return resize


# Photos of any object: crops down to a third of the frame, zoom-outs onto a plain canvas (product
# shots), small tilts, colour, soft focus and sensor noise.
GENERAL_AUGMENT = Augment(min_area=0.35, max_area=1.6, rotation=10.0, brightness=0.15, contrast=0.25,
                          saturation=0.3, blur=0.25, noise=0.03)


def make_datasets(cache: Cache, image_size: int, batch_size: int, seed: int = 0, augment: Augment = GENERAL_AUGMENT,
                  n_outputs: int = 1, teacher: np.ndarray | None = None, taught: np.ndarray | None = None,
                  distill: float = 0.0):
    """(train, validation) tf.data pipelines of (images, targets); targets are (alpha, ignore) stacked
    on the last axis, repeated once per model output. With ``teacher`` (``training.teacher``), the
    training alpha of the rows in ``taught`` is blended with the teacher's matte by ``distill``; the
    hold-out is always scored against the truth."""
    import tensorflow as tf

    def fan_out(images, target):
        return images, tuple([target] * n_outputs) if n_outputs > 1 else target

    train = (_batches(cache, cache.train, batch_size, True, seed, teacher, taught, distill)
             .map(_augment(image_size, cache.size, augment, seed), num_parallel_calls=1)
             .map(fan_out).prefetch(2))
    val = (_batches(cache, cache.val, batch_size, False, seed)
           .map(_resize(image_size), num_parallel_calls=tf.data.AUTOTUNE).map(fan_out).cache().prefetch(2))
    return train, val
