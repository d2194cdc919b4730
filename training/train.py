"""Train the U-Net on Oxford-IIIT Pet: ``python -m training.train --out runs/stage1 --image-size 128``.

Checkpoints every epoch (``last.keras``, with the optimizer and schedule state) and keeps the best
by validation foreground Dice (``best.keras``); ``--resume`` continues from ``last.keras`` at the
epoch the CSV log ends on. ``--init-from`` starts a new stage (say a fine-tune at 256) from the
weights of an earlier one: the network is fully convolutional, so weights move between sizes.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.data import AUGMENTS, DEFAULT_DATA_DIR, make_dataset, read_split
from training.losses import CrossEntropyDice, ForegroundDice
from training.model import DEFAULT_DROPOUT, build_unet

DEFAULT_VAL_COUNT = 150  # held out of trainval for curves and model selection; test stays unseen
LOG_NAME, LAST_NAME, BEST_NAME = "log.csv", "last.keras", "best.keras"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="Oxford-IIIT Pet folder")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.csv, args.json")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=256, help="training resolution, a multiple of 16")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay after warm-up)")
    p.add_argument("--min-lr-ratio", type=float, default=0.02, help="final lr as a share of the peak")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=DEFAULT_DROPOUT)
    p.add_argument("--dice-weight", type=float, default=1.0)
    p.add_argument("--augment", choices=sorted(AUGMENTS), default="default",
                   help="augmentation strength (training/data.py AUGMENTS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-count", type=int, default=DEFAULT_VAL_COUNT)
    p.add_argument("--limit", type=int, default=0, help="use only N training images (smoke tests)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.keras")
    p.add_argument("--init-from", type=Path, help="start from the weights of this .keras file")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep batch norm in inference mode (for weights recovered by training.from_onnx)")
    args = p.parse_args(argv)
    if args.image_size % 16:
        p.error(f"--image-size must be a multiple of 16, got {args.image_size}")
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def split_names(data: Path, val_count: int, seed: int, limit: int) -> tuple[list[str], list[str]]:
    names = read_split(data, "trainval")
    rng = random.Random(seed)
    shuffled = names[:]
    rng.shuffle(shuffled)
    val, train = sorted(shuffled[:val_count]), sorted(shuffled[val_count:])
    if limit:
        train, val = train[:limit], val[: max(1, min(len(val), limit // 2))]
    return train, val


def completed_epochs(log_path: Path) -> int:
    if not log_path.exists():
        return 0
    with log_path.open() as f:
        return sum(1 for _ in csv.DictReader(f))


def resume_or_start(out: Path, resume: bool) -> tuple[keras.Model | None, int]:
    """(the checkpoint to continue, its next epoch) with --resume and a last.keras in OUT; else
    (None, 0) after removing a stale log, and the caller builds a fresh model."""
    log_path, last_path = out / LOG_NAME, out / LAST_NAME
    if resume and last_path.exists():
        initial_epoch = completed_epochs(log_path)
        print(f"resuming {last_path} at epoch {initial_epoch}", flush=True)
        return keras.models.load_model(last_path), initial_epoch
    if log_path.exists():
        log_path.unlink()
    return None, 0


def compile_model(model: keras.Model, args: argparse.Namespace, steps_per_epoch: int) -> None:
    total = max(1, args.epochs * steps_per_epoch)
    warmup = int(args.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr * 0.1 if warmup else args.lr,
        decay_steps=max(1, total - warmup),
        alpha=args.min_lr_ratio,
        warmup_target=args.lr if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=CrossEntropyDice(args.dice_weight),
        metrics=[ForegroundDice(), keras.metrics.SparseCategoricalAccuracy(name="pixel_acc")],
    )


class EpochTimer(keras.callbacks.Callback):
    """Adds the epoch's wall time and learning rate to the logs (and so to the CSV)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = time.perf_counter() - self._t0
        lr = self.model.optimizer.learning_rate
        logs["lr"] = float(lr(self.model.optimizer.iterations) if callable(lr) else lr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed_everything(args.seed)
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    args.out.mkdir(parents=True, exist_ok=True)
    train_names, val_names = split_names(args.data, args.val_count, args.seed, args.limit)
    steps = len(train_names) // args.batch_size
    if steps == 0:
        print(f"error: {len(train_names)} training images is less than one batch of {args.batch_size}", file=sys.stderr)
        return 2
    train_ds = make_dataset(
        args.data, train_names, args.image_size, args.batch_size, True, args.seed, AUGMENTS[args.augment]
    )
    val_ds = make_dataset(args.data, val_names, args.image_size, args.batch_size, False)

    log_path, last_path = args.out / LOG_NAME, args.out / LAST_NAME
    model, initial_epoch = resume_or_start(args.out, args.resume)
    if model is None:
        model = build_unet(args.image_size, args.dropout)
        if args.init_from:
            model.set_weights(keras.models.load_model(args.init_from, compile=False).get_weights())
            print(f"initialised from {args.init_from}", flush=True)
        if args.freeze_bn:
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False  # Keras 3: a frozen BN also normalises with its moving statistics
        compile_model(model, args, steps)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    if initial_epoch >= args.epochs:
        print("nothing to do: all epochs done", flush=True)
        return 0
    callbacks = [
        EpochTimer(),
        keras.callbacks.ModelCheckpoint(last_path),
        keras.callbacks.ModelCheckpoint(args.out / BEST_NAME, monitor="val_fg_dice", mode="max", save_best_only=True),
        keras.callbacks.CSVLogger(log_path, append=True),
    ]
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
