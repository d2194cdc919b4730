"""The core's benchmark: per-stage time, end-to-end latency, throughput against the seed and rembg.

    python bench/core.py [--skip-peers] [--repeat 5]

1. Per-stage time (decode, infer, upsample, operation, encode) of ``remove`` -> PNG on 0.3, 2 and
   12 MP JPEGs, fp32 and int8, in this process (model loaded once, as in a worker).
2. Images per second on a folder of 2 MP photos, ``remove`` -> PNG, every contender on the same
   files in the same run: maskq's CLI (the whole command, start-up included), the seed's way
   (Keras ``predict`` one image at a time at 256x256, argmax mask resized naively, PNG), and rembg
   with u2netp (its own environment, see bench/peers.py).
3. The peak RSS of a worker-style process (model loaded, 12 MP remove).

The photos are Oxford-IIIT Pet test photos (../shared) resized to each size; without the data
set, samples/ photos are used. Goals (issue 3): 12 MP <= 1.0 s, 2 MP <= 0.25 s, RSS <= 400 MB,
>= 5x the seed and >= 3x rembg in images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import CACHE, rembg_env  # noqa: E402
from maskq.defaults import SHARED_DATASETS  # noqa: E402
from maskq.models import DEFAULT_MODEL, MODELS  # noqa: E402
from maskq.pipeline import STAGES, Pipeline  # noqa: E402
from maskq.settings import load_settings  # noqa: E402

PETS = SHARED_DATASETS / "oxford-pets" / "test-fullres" / "images"
SIZES = {"0.3 MP": (640, 480), "2 MP": (1632, 1224), "12 MP": (4000, 3000)}
FOLDER_IMAGES = 16


def source_photos(count: int) -> list[Path]:
    if PETS.exists():
        return sorted(PETS.glob("*.jpg"))[:: 300 // count][:count]
    return sorted((REPO / "samples").glob("*.jpg"))


def make_jpeg(src: Path, size: tuple[int, int], dest: Path) -> Path:
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(dest, quality=90)
    return dest


def stage_table(repeat: int, model: str) -> list[dict]:
    src = source_photos(1)[0]
    rows = []
    for precision in ("fp32", "int8"):
        settings = load_settings(precision=precision, model=model)
        if not settings.model_path().exists():
            print(f"skipping {precision}: {settings.model_path()} missing", file=sys.stderr)
            continue
        pipeline = Pipeline.load(settings)
        for label, size in SIZES.items():
            data = make_jpeg(src, size, CACHE / "photos" / f"{size[0]}x{size[1]}.jpg").read_bytes()
            pipeline.process(data, "remove", {"format": "png"})  # warm-up
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                result = pipeline.process(data, "remove", {"format": "png"})
                runs.append((time.perf_counter() - t0, result.timings))
            total = statistics.median(t for t, _ in runs)
            stages = {s: statistics.median(tm.get(s, 0.0) for _, tm in runs) for s in STAGES}
            rows.append({"model": precision, "size": label, "total": total, **stages})
    return rows


SEED_LOOP = textwrap.dedent(
    """
    # The seed's way: Keras predict on one image at a time, naive mask resize, Pillow PNG.
    import os, sys, time, numpy as np
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, {repo!r})
    from PIL import Image
    from training.model import build_unet
    model = build_unet()  # the speed does not depend on the weights
    paths, out = sys.argv[1:-1], sys.argv[-1]
    model.predict(np.zeros((1, 256, 256, 3), np.float32), verbose=0)
    t0 = time.perf_counter()
    for p in paths:
        img = Image.open(p).convert("RGB")
        x = np.asarray(img.resize((256, 256)), np.float32)[None] / 255.0
        cls = model.predict(x, verbose=0)[0].argmax(-1)
        mask = Image.fromarray(((cls != 1) * 255).astype(np.uint8)).resize(img.size)
        img.putalpha(mask)
        img.save(os.path.join(out, os.path.basename(p) + ".png"))
    print(time.perf_counter() - t0)
    """
)

REMBG_LOOP = textwrap.dedent(
    """
    import os, sys, time
    from rembg import new_session, remove
    session = new_session("u2netp")
    paths, out = sys.argv[1:-1], sys.argv[-1]
    remove(open(paths[0], "rb").read(), session=session)
    t0 = time.perf_counter()
    for p in paths:
        data = remove(open(p, "rb").read(), session=session)
        open(os.path.join(out, os.path.basename(p) + ".png"), "wb").write(data)
    print(time.perf_counter() - t0)
    """
)


def timed_script(python: str, script: str, paths: list[Path], env: dict | None = None) -> float:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [python, "-c", script, *map(str, paths), out], capture_output=True, text=True, env=env, timeout=1800
        )
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        return float(proc.stdout.strip().splitlines()[-1])


def folder_table(skip_peers: bool, model: str) -> list[dict]:
    folder = CACHE / "folder-2mp"
    paths = [make_jpeg(p, SIZES["2 MP"], folder / p.name) for p in source_photos(FOLDER_IMAGES)]
    rows = []
    for precision in ("fp32", "int8"):
        out = Path(tempfile.mkdtemp())
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "maskq.cli",
                "remove",
                str(folder),
                "-o",
                str(out),
                "--precision",
                precision,
                "--model",
                model,
                "--quiet",
                "--format",
                "png",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        seconds = time.perf_counter() - t0
        shutil.rmtree(out)
        if proc.returncode == 0:
            rows.append(
                {"contender": f"maskq CLI ({precision}, start-up included)", "images": len(paths), "seconds": seconds}
            )
        else:
            print(f"maskq CLI {precision} failed: {proc.stderr[-500:]}", file=sys.stderr)
    try:
        import tensorflow  # noqa: F401

        rows.append(
            {
                "contender": "seed loop (Keras predict, fp32)",
                "images": len(paths),
                "seconds": timed_script(sys.executable, SEED_LOOP.format(repo=str(REPO)), paths),
            }
        )
    except ImportError:
        print("skipping the seed loop: TensorFlow is not installed (the train extra)", file=sys.stderr)
    if not skip_peers:
        python, home = rembg_env()
        env = {**os.environ, "U2NET_HOME": str(home), "OMP_NUM_THREADS": str(os.cpu_count())}
        rows.append(
            {
                "contender": "rembg u2netp",
                "images": len(paths),
                "seconds": timed_script(str(python), REMBG_LOOP, paths, env),
            }
        )
    for r in rows:
        r["images_per_second"] = r["images"] / r["seconds"]
    return rows


def worker_rss() -> float:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from maskq.pipeline import Pipeline
        p = Pipeline.load()
        data = open(sys.argv[1], "rb").read()
        for _ in range(3):
            p.process(data, "remove", {{"format": "png"}})
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child spawned
        # (vfork) by this big benchmark process would report the parent's peak instead of its own
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(int(hwm.split()[1]) / 1024)
        """
    )
    photo = make_jpeg(source_photos(1)[0], SIZES["12 MP"], CACHE / "photos" / "4000x3000.jpg")
    proc = subprocess.run([sys.executable, "-c", script, str(photo)], capture_output=True, text=True, check=True)
    return float(proc.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL, help="maskq's model")
    parser.add_argument("--skip-peers", action="store_true", help="no rembg (no venv to build)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    print(f"machine: {os.cpu_count()} cores; photos from {PETS if PETS.exists() else REPO / 'samples'}\n")
    stages = stage_table(args.repeat, args.model)
    print("remove -> PNG, median of", args.repeat, "runs, milliseconds")
    print(f"{'model':<6} {'size':<7} " + " ".join(f"{s:>9}" for s in STAGES) + f" {'total':>9}")
    for r in stages:
        print(
            f"{r['model']:<6} {r['size']:<7} "
            + " ".join(f"{r[s] * 1000:9.1f}" for s in STAGES)
            + f" {r['total'] * 1000:9.1f}"
        )

    folder = folder_table(args.skip_peers, args.model)
    print(f"\nfolder of {FOLDER_IMAGES} photos at 2 MP, remove -> PNG")
    seed = next((r for r in folder if r["contender"].startswith("seed")), None)
    rembg = next((r for r in folder if r["contender"].startswith("rembg")), None)
    print(f"{'contender':<44} {'seconds':>8} {'img/s':>7} {'vs seed':>8} {'vs rembg':>9}")
    for r in folder:
        vs_seed = f"{r['images_per_second'] / seed['images_per_second']:.1f}x" if seed else "-"
        vs_rembg = f"{r['images_per_second'] / rembg['images_per_second']:.1f}x" if rembg else "-"
        print(f"{r['contender']:<44} {r['seconds']:8.2f} {r['images_per_second']:7.2f} {vs_seed:>8} {vs_rembg:>9}")

    rss = worker_rss()
    print(f"\nworker-style process peak RSS after 3 x 12 MP remove: {rss:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"stages": stages, "folder": folder, "worker_rss_mb": rss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
