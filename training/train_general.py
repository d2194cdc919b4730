"""Train the general model on DUTS-TR + Oxford-IIIT Pet.

    python -m training.train_general --duts DIR --cache /tmp/maskq-cache --out runs/general-192 \
        --image-size 192 --epochs 8 --resume

The first run decodes the photos once into ``--cache`` (training.saliency_data). Checkpoints every
epoch (``last.keras`` with the optimizer state; ``--resume`` continues at the epoch the CSV log ends
on) and keeps the best by validation Dice on the hold-out (``best.keras`` and ``best.weights.h5``,
the weights alone, small enough to commit so that a later session on a new machine can resume a
fine-tune with ``--init-from``). ``--bf16`` trains in mixed bfloat16, several times faster on CPUs
with AMX or AVX-512 BF16.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import keras
import numpy as np

from training.data import DEFAULT_DATA_DIR
from training.general_model import OUTPUT_NAME, SIDE_STRIDES, build_general_unet, copy_weights
from training.losses import AlphaDice, AlphaMAE, StructureLoss
from training.saliency_data import Cache, build_cache, make_datasets
from training.train import LAST_NAME, LOG_NAME, EpochTimer, resume_or_start, seed_everything

BEST_NAME, BEST_WEIGHTS = "best.keras", "best.weights.h5"
SIDE_WEIGHT = 0.4  # deep supervision: each side output's share of the loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duts", type=Path, required=True, help="folder holding DUTS-TR-Image/ and DUTS-TR-Mask/")
    p.add_argument("--pets", type=Path, default=DEFAULT_DATA_DIR, help="Oxford-IIIT Pet folder ('' to leave out)")
    p.add_argument("--cache", type=Path, required=True, help="where the decoded photos are kept (about 4.5 GB)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=192, help="a multiple of 32")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.02)
    p.add_argument("--warmup-epochs", type=float, default=0.3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only N training photos (smoke tests)")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="0: one pass over the training photos")
    p.add_argument("--bf16", action="store_true", help="mixed bfloat16 (CPUs with AMX / AVX-512 BF16)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.keras")
    p.add_argument("--distill", type=float, default=0.0,
                   help="blend the DUTS-TR training alphas with u2netp's mattes by this weight (0-1); "
                        "needs python -m training.teacher --cache CACHE first")
    p.add_argument("--init-from", type=Path, help="start from these weights (.keras or .weights.h5)")
    args = p.parse_args(argv)
    if args.image_size % 32:
        p.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    if not 0.0 <= args.distill <= 1.0:
        p.error(f"--distill is a weight between 0 and 1, got {args.distill}")
    return args


def compile_model(model: keras.Model, args: argparse.Namespace, steps_per_epoch: int) -> None:
    total = max(1, args.epochs * steps_per_epoch)
    warmup = int(args.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.lr * 0.1 if warmup else args.lr, decay_steps=max(1, total - warmup),
        alpha=args.min_lr_ratio, warmup_target=args.lr if warmup else None, warmup_steps=warmup)
    outputs = [OUTPUT_NAME] + [f"side{s}" for s in SIDE_STRIDES]
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay),
        loss={name: StructureLoss() for name in outputs},
        loss_weights={name: 1.0 if name == OUTPUT_NAME else SIDE_WEIGHT for name in outputs},
        metrics={OUTPUT_NAME: [AlphaDice(), AlphaMAE()]},
    )


class SaveBestWeights(keras.callbacks.Callback):
    """best.keras and best.weights.h5 whenever the hold-out Dice improves."""

    def __init__(self, out: Path, monitor: str) -> None:
        super().__init__()
        self.out, self.monitor, self.best = out, monitor, -1.0

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get(self.monitor, -1.0))
        if value > self.best:
            self.best = value
            self.model.save(self.out / BEST_NAME)
            self.model.save_weights(self.out / BEST_WEIGHTS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed_everything(args.seed)
    if args.bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    args.out.mkdir(parents=True, exist_ok=True)
    build_cache(args.cache, args.duts, args.pets if str(args.pets) else None)
    cache = Cache(args.cache, args.seed, args.limit)
    steps = args.steps_per_epoch or len(cache.train) // args.batch_size
    n_outputs = 1 + len(SIDE_STRIDES)
    teacher = taught = None
    if args.distill:
        from training import teacher as teacher_mattes

        teacher, taught = teacher_mattes.load(args.cache)
        taught = taught[np.isin(taught, cache.train)]
        print(f"distilling u2netp's mattes into {len(taught)} of {len(cache.train)} training photos "
              f"at weight {args.distill}", flush=True)
    train_ds, val_ds = make_datasets(cache, args.image_size, args.batch_size, args.seed, n_outputs=n_outputs,
                                     teacher=teacher, taught=taught, distill=args.distill)
    print(f"{len(cache.train)} training photos, {len(cache.val)} held out; {steps} steps an epoch", flush=True)

    log_path, last_path = args.out / LOG_NAME, args.out / LAST_NAME
    model, initial_epoch = resume_or_start(args.out, args.resume)
    if model is None:
        model = build_general_unet(args.image_size, pretrained=not args.init_from, with_side_outputs=True)
        if args.init_from:
            source = args.init_from
            if source.name.endswith(".weights.h5"):
                model.load_weights(source)
            else:
                copy_weights(keras.models.load_model(source, compile=False), model)
            print(f"initialised from {source}", flush=True)
        compile_model(model, args, steps)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    if initial_epoch >= args.epochs:
        print("nothing to do: all epochs done", flush=True)
        return 0
    monitor = f"val_{OUTPUT_NAME}_dice"
    best = SaveBestWeights(args.out, monitor)
    if log_path.exists():  # a resumed run keeps the best score it had
        import csv

        with log_path.open() as f:
            best.best = max((float(r[monitor]) for r in csv.DictReader(f)), default=-1.0)
    model.fit(
        train_ds, validation_data=val_ds, epochs=args.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
        callbacks=[EpochTimer(), keras.callbacks.ModelCheckpoint(last_path), best,
                   keras.callbacks.CSVLogger(log_path, append=True)],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
