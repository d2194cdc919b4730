"""How well the mask confidence (maskq/confidence.py) finds the bad masks, for the default model.

    python bench/confidence.py                      # report on ECSSD and the pets test split
    python bench/confidence.py --fit                # refit the signals' combination on the hold-out

Report (never fitted on): ECSSD (``../shared/datasets/ecssd-dev``, 756 photos) and the Oxford-IIIT
Pet test split (pet + border is the object). Each photo goes through the runtime as a job does
(network, guided-filter matting); its true Dice is scored as training/evaluate.py does (alpha > 0.5,
both masks at 128x128). Printed per set: Spearman correlation of confidence with Dice; ROC AUC of
(1 - confidence) for finding masks with Dice < 0.8; how many of the worst 5 % (by Dice) fall in the
lowest 10 % of confidence; at the default ``review_below`` the share of Dice < 0.8 masks flagged and
the share of all photos flagged; and the confidence's cost for a 12 MP photo.

``--fit`` runs the same on the general model's training hold-out, which the report never sees: the
500 DUTS-TR photos and 150 pets trainval photos that ``training.saliency_data.val_names`` holds out
(``--duts`` holds DUTS-TR-Image/ and DUTS-TR-Mask/; the names come from the training cache's
meta.json when there is one, else from the folders). It prints each signal's own ROC AUC, picks
signals by greedy forward selection on 5-fold cross-validated AUC (a signal may only move the
confidence the way it moves alone: no sign flips from collinearity), fits a logistic regression of
"Dice >= 0.8" on them and prints the coefficients to paste into maskq/confidence.py, and the
``review_below`` to make the default (see ``choose_review_below``): paste both into
maskq/confidence.py and maskq/defaults.py (REVIEW_BELOW; the README's settings table names it too).

``--cache DIR`` keeps each set's network outputs and Dice per model file (keyed by its hash), so a
second run, or a fit after a report, does not run the network again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq import confidence as conf  # noqa: E402
from maskq import defaults  # noqa: E402
from maskq.matting import network_input, soft_alpha  # noqa: E402
from maskq.models import DEFAULT_MODEL, MODELS  # noqa: E402
from maskq.segmentation import OnnxSegmenter  # noqa: E402
from training.evaluate import (  # noqa: E402
    DEFAULT_DATA_DIR,
    DEFAULT_ECSSD_DIR,
    SCORE_SIZE,
    TRIMAP_BACKGROUND,
    dice_iou,
    ecssd_names,
    read_names,
)

BAD_DICE = 0.8  # a mask below this Dice is one a shop would not publish
WORST_SHARE, LOWEST_SHARE = 0.05, 0.10
BATCH = 8
DEFAULT_DUTS = Path("/work/data/duts")
# the review_below rule: the threshold that catches the most bad masks while flagging at most this
# share of the hold-out photos (the goal allows 15 % on ECSSD; 12 % leaves room for a set
# with more hard photos than the hold-out)
MAX_FLAGGED = 0.12


# --- the sets: (name, loader) pairs; a loader gives (rgb uint8, truth bool) ---------------------------


def ecssd_set(folder: Path) -> list[tuple[str, callable]]:
    def load(n: str):
        rgb = np.asarray(Image.open(folder / "images" / f"{n}.jpg").convert("RGB"))
        return rgb, np.asarray(Image.open(folder / "masks" / f"{n}.png").convert("L")) > 127

    return [(n, lambda n=n: load(n)) for n in ecssd_names(folder)]


def pets_set(folder: Path, names: list[str]) -> list[tuple[str, callable]]:
    def load(n: str):
        rgb = np.asarray(Image.open(folder / "images" / f"{n}.jpg").convert("RGB"))
        return rgb, np.asarray(Image.open(folder / "trimaps" / f"{n}.png")) != TRIMAP_BACKGROUND

    return [(n, lambda n=n: load(n)) for n in names if (folder / "images" / f"{n}.jpg").exists()]


def duts_set(folder: Path, stems: list[str]) -> list[tuple[str, callable]]:
    def load(s: str):
        rgb = np.asarray(Image.open(folder / "DUTS-TR-Image" / f"{s}.jpg").convert("RGB"))
        return rgb, np.asarray(Image.open(folder / "DUTS-TR-Mask" / f"{s}.png").convert("L")) > 127

    return [(s, lambda s=s: load(s)) for s in stems]


def holdout_names(duts: Path, pets: Path, meta: Path | None) -> tuple[list[str], list[str]]:
    """The general model's training hold-out: (DUTS-TR stems, pets names)."""
    from training.saliency_data import val_names  # imports TensorFlow (training.data): --fit only

    if meta is not None and meta.exists():
        names = json.loads(meta.read_text())["names"]
    else:
        names = [f"duts/{p.stem}" for p in sorted((duts / "DUTS-TR-Image").glob("*.jpg"))
                 if (duts / "DUTS-TR-Mask" / f"{p.stem}.png").exists()]
        names += [f"pets/{n}" for n in read_names(pets, "trainval") if (pets / "images" / f"{n}.jpg").exists()]
    held = sorted(val_names(names))
    return [n[5:] for n in held if n.startswith("duts/")], [n[5:] for n in held if n.startswith("pets/")]


# --- running the model --------------------------------------------------------------------------------


def dice_at_score_size(alpha: np.ndarray, truth: np.ndarray) -> float:
    """training.evaluate.saliency_scores' Dice: both masks at 128x128, alpha > 0.5."""
    small = (SCORE_SIZE, SCORE_SIZE)
    a = cv2.resize(alpha.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.5
    t = cv2.resize(truth.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.5
    return dice_iou(a, t)[0]


def run_set(seg: OnnxSegmenter, label: str, items: list, cache: Path | None, model_hash: str) -> dict:
    """{'names', 'dice' (N,), 'fg' (N, S, S) uint8}: the network's outputs and each photo's Dice."""
    path = cache / f"{label}-{model_hash}.npz" if cache else None
    if path is not None and path.exists():
        data = np.load(path)
        return {"names": list(data["names"]), "dice": data["dice"], "fg": data["fg"]}
    names, dice, fgs = [], [], []
    size = seg.spec.input_size
    for i in tqdm(range(0, len(items), BATCH), desc=label, unit="batch", leave=False):
        chunk = [(n, load()) for n, load in items[i : i + BATCH]]
        out = seg.predict(np.stack([network_input(rgb, size) for _, (rgb, _) in chunk]))
        for (n, (rgb, truth)), fg in zip(chunk, out, strict=True):
            names.append(n)
            dice.append(dice_at_score_size(soft_alpha(fg, rgb), truth))
            fgs.append(np.round(fg * 255).astype(np.uint8))  # 1/255 steps: the signals do not notice
    result = {"names": names, "dice": np.array(dice), "fg": np.stack(fgs)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, names=np.array(names), dice=result["dice"], fg=result["fg"])
    return result


def signal_table(fg: np.ndarray) -> dict[str, np.ndarray]:
    rows = [conf.signals(f.astype(np.float32) * (1 / 255)) for f in fg]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


# --- statistics (numpy only) --------------------------------------------------------------------------


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half (Mann-Whitney)."""
    pos = positive.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if not n1 or not n0:
        return float("nan")
    r = ranks(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def worst_in_lowest(confidence: np.ndarray, dice: np.ndarray) -> tuple[int, int]:
    """(how many of the worst WORST_SHARE by Dice are among the lowest LOWEST_SHARE by confidence, of how many)."""
    n = len(dice)
    worst = set(np.argsort(dice, kind="mergesort")[: max(1, round(WORST_SHARE * n))])
    lowest = set(np.argsort(confidence, kind="mergesort")[: max(1, round(LOWEST_SHARE * n))])
    return len(worst & lowest), len(worst)


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    return (x - mu) / sd, mu, sd


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Newton's method for P(y=1) = sigmoid(w0 + x @ w); L2 on w (not w0). Returns (w0, w...)."""
    xb = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2 * len(x))
    reg[0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def cv_auc(x: np.ndarray, good: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """5-fold cross-validated ROC AUC of the logistic fit for finding the bad masks."""
    order = np.random.default_rng(seed).permutation(len(x))
    pred = np.empty(len(x))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        z, mu, sd = standardise(x[train])
        w = logistic_fit(z, good[train])
        pred[test] = w[0] + ((x[test] - mu) / sd) @ w[1:]
    return roc_auc(-pred, ~good.astype(bool))


def raw_coefficients(x: np.ndarray, good: np.ndarray) -> tuple[float, np.ndarray]:
    """The fit on standardised signals, turned back into raw units (what maskq/confidence.py holds)."""
    z, mu, sd = standardise(x)
    w = logistic_fit(z, good)
    coefs = w[1:] / sd
    return float(w[0] - (coefs * mu).sum()), coefs


def choose_review_below(confidence: np.ndarray, bad: np.ndarray, max_flagged: float = MAX_FLAGGED) -> float:
    """The largest threshold (in steps of 0.01) that flags at most ``max_flagged`` of the photos:
    with confidence monotone in P(bad), the largest allowed threshold catches the most bad masks."""
    best = 0.0
    for t in np.arange(0.01, 1.0, 0.01):
        if (confidence < t).mean() <= max_flagged:
            best = float(round(t, 2))
    return best


# --- the two modes ------------------------------------------------------------------------------------


def cost_ms(seg: OnnxSegmenter, repeats: int = 50) -> dict[str, float]:
    """Median time of the confidence for a 12 MP photo: its network output (the only thing the
    confidence reads; the photo's size does not matter past the network) through ``signals`` and
    ``combine``, as the pipeline calls them."""
    rgb = cv2.resize(np.asarray(Image.open(REPO / "samples" / "chelsea.jpg").convert("RGB")), (4000, 3000))
    fg = seg.predict(network_input(rgb, seg.spec.input_size)[None])[0]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conf.mask_confidence(fg)
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times)}


def report(label: str, data: dict, review_below: float) -> dict:
    dice = data["dice"]
    table = signal_table(data["fg"])
    c = np.array([conf.combine({k: v[i] for k, v in table.items()}) for i in range(len(dice))])
    bad = dice < BAD_DICE
    hit, worst = worst_in_lowest(c, dice)
    flagged = c < review_below
    return {
        "set": label, "photos": len(dice), "mean_dice": float(dice.mean()), "bad": int(bad.sum()),
        "spearman": spearman(c, dice), "auc_bad": roc_auc(-c, bad),
        "worst5_in_lowest10": f"{hit}/{worst}",
        "bad_flagged": float(flagged[bad].mean()) if bad.any() else float("nan"),
        "flagged": float(flagged.mean()),
        "signal_auc": {k: round(roc_auc(v, bad), 3) for k, v in table.items()},
    }


def fit(data: list[dict], max_signals: int = 4, min_gain: float = 0.005) -> None:
    dice = np.concatenate([d["dice"] for d in data])
    tables = [signal_table(d["fg"]) for d in data]
    table = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    bad = dice < BAD_DICE
    good = (~bad).astype(float)
    print(f"hold-out: {len(dice)} photos, mean Dice {dice.mean():.3f}, {bad.sum()} with Dice < {BAD_DICE}")
    print("each signal alone, ROC AUC for finding Dice < 0.8 (0.5 is chance; < 0.5: high means good):")
    for k, v in table.items():
        print(f"  {k:13s} {roc_auc(v, bad):.3f}   Spearman with Dice {spearman(v, dice):+.3f}")
    # each signal may only push the confidence the way it goes alone (a signal that is bad news alone
    # must not become good news beside another one: that is collinearity, and it extrapolates badly)
    direction = {k: -1.0 if roc_auc(v, bad) > 0.5 else 1.0 for k, v in table.items()}

    def consistent(names: list[str]) -> bool:
        _, coefs = raw_coefficients(np.column_stack([table[s] for s in names]), good)
        return all(np.sign(c) == direction[s] for s, c in zip(names, coefs, strict=True))

    chosen: list[str] = []
    best = 0.5
    while len(chosen) < max_signals:
        trials = {k: cv_auc(np.column_stack([table[s] for s in [*chosen, k]]), good)
                  for k in table if k not in chosen and consistent([*chosen, k])}
        if not trials:
            break
        k, auc = max(trials.items(), key=lambda kv: kv[1])
        if auc - best < min_gain:
            print(f"  stop: adding {k} gives {auc:.3f} (< +{min_gain})")
            break
        chosen.append(k)
        best = auc
        print(f"  + {k:13s} cross-validated AUC {auc:.3f}")
    x = np.column_stack([table[s] for s in chosen])
    b0, coefs = raw_coefficients(x, good)
    c = 1 / (1 + np.exp(-(b0 + x @ coefs)))
    review_below = choose_review_below(c, bad)
    print("\npaste into maskq/confidence.py:")
    print(f"INTERCEPT = {b0:.4g}")
    print("COEFFICIENTS: dict[str, float] = {" + ", ".join(f'"{s}": {w:.4g}' for s, w in zip(chosen, coefs,
                                                                                              strict=True)) + "}")
    flagged = c < review_below
    print(f"review_below = {review_below:.2f}  (largest that flags <= {MAX_FLAGGED:.0%} of the hold-out): "
          f"flags {flagged.mean():.1%} of photos and {flagged[bad].mean():.1%} of the Dice < {BAD_DICE} masks; "
          f"in-sample AUC {roc_auc(-c, bad):.3f}, Spearman {spearman(c, dice):+.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--fit", action="store_true", help="fit on the training hold-out instead of reporting")
    p.add_argument("--ecssd", type=Path, default=DEFAULT_ECSSD_DIR)
    p.add_argument("--pets", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--duts", type=Path, default=DEFAULT_DUTS, help="DUTS-TR (DUTS-TR-Image/, DUTS-TR-Mask/)")
    p.add_argument("--meta", type=Path, default=None,
                   help="the training cache's meta.json (default: <duts>/../cache288/meta.json when present)")
    p.add_argument("--review-below", type=float, default=defaults.REVIEW_BELOW)
    p.add_argument("--limit", type=int, default=0, help="first N photos per set (smoke runs)")
    p.add_argument("--cache", type=Path, help="keep network outputs and Dice here, per model file")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)

    spec = MODELS[args.model]
    path = defaults.MODELS_DIR / spec.files[args.precision]
    seg = OnnxSegmenter(path, spec, args.precision, intra_op_threads=args.threads)
    model_hash = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    print(f"model {args.model} {args.precision}: {path.name} (sha1 {model_hash})")

    def cut(items: list) -> list:
        return items[: args.limit] if args.limit else items

    if args.fit:
        meta = args.meta or args.duts.parent / "cache288" / "meta.json"
        duts_stems, pet_names = holdout_names(args.duts, args.pets, meta)
        data = [run_set(seg, "holdout-duts", cut(duts_set(args.duts, duts_stems)), args.cache, model_hash),
                run_set(seg, "holdout-pets", cut(pets_set(args.pets, pet_names)), args.cache, model_hash)]
        fit(data)
        return 0

    print(f"confidence: {conf.FIT_NOTE}; signals {', '.join(conf.COEFFICIENTS)}; review_below {args.review_below}")
    rows = []
    sets = [("ecssd", lambda: ecssd_set(args.ecssd)),
            ("pets-test", lambda: pets_set(args.pets, read_names(args.pets, "test")))]
    for label, items in sets:
        rows.append(report(label, run_set(seg, label, cut(items()), args.cache, model_hash), args.review_below))
    cost = cost_ms(seg)
    print(f"\n{'set':10s} {'photos':>6s} {'Dice':>6s} {'<0.8':>5s} {'Spearman':>8s} {'AUC<0.8':>8s} "
          f"{'worst5%in low10%':>17s} {'bad flagged':>11s} {'flagged':>8s}")
    for r in rows:
        print(f"{r['set']:10s} {r['photos']:6d} {r['mean_dice']:6.3f} {r['bad']:5d} {r['spearman']:+8.3f} "
              f"{r['auc_bad']:8.3f} {r['worst5_in_lowest10']:>17s} {r['bad_flagged']:11.1%} {r['flagged']:8.1%}")
    print(f"\nconfidence cost, 12 MP photo: median {cost['median_ms']:.2f} ms (max {cost['max_ms']:.2f} ms)")
    for r in rows:
        print(f"signals alone, AUC for Dice < 0.8 on {r['set']}: {r['signal_auc']}")
    if args.json:
        args.json.write_text(json.dumps({"model": path.name, "sha1": model_hash, "review_below": args.review_below,
                                         "sets": rows, "cost": cost}, indent=2, default=float) + "\n")
    return 0 if all(not math.isnan(r["auc_bad"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
