"""The README's first command: the whole service on this machine, the bundled samples through its API.

Starts what ``maskq up`` starts (Redis, S3, a worker, the API: :class:`maskq.local.up.Stack`) on free
loopback ports with its state in a temporary folder, sends each operation over HTTP with
:mod:`maskq.local.client` (the logo for ``swap`` goes up first through a presigned upload), waits for
the jobs, saves the results, prints a table and writes ``contact-sheet.png`` (inputs and outputs
side by side), then stops everything. Exit status: 0 every job succeeded, 1 some failed,
3 the service could not start (the state folder with its logs is kept then).

    python -m maskq.local.demo --out out/demo
"""

from __future__ import annotations

import argparse
import io
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw

from maskq import defaults
from maskq.errors import MaskqError

SAMPLES = defaults.REPO_ROOT / "samples"
LOGO = "logo.png"
# (input, operation, params): each operation at least once, with the default (general) model on photos
# that are not pets (a person, a product on the webshop's white canvas with its logo), and the pets
# model once for comparison; params naming LOGO get the key of the uploaded logo instead
DEMO_JOBS: list[tuple[str, str, dict]] = [
    ("coffee.jpg", "swap", {"canvas_width": 1000, "canvas_height": 1000, "scale": 0.8, "logo": LOGO,
                            "format": "jpeg"}),
    ("coffee.jpg", "remove", {"crop": True}),
    ("astronaut.jpg", "remove", {}),
    ("astronaut.jpg", "faceblur", {}),
    ("astronaut.jpg", "blur", {"strength": 60}),
    ("chelsea.jpg", "mask", {}),
    ("chelsea.jpg", "crop", {"margin": 0.1}),
    ("chelsea.jpg", "swap", {"background_color": "#2a6f97"}),
    ("chelsea.jpg", "remove", {"model": "pets"}),
]
THUMB = 220
JOB_TIMEOUT_SECONDS = 300.0


def contact_sheet(rows: list[tuple[bytes, bytes, str]], path: Path) -> None:
    """Input and output side by side, one row per job, transparency on a checkerboard."""
    sheet = Image.new("RGB", (2 * THUMB + 30, max(1, len(rows)) * (THUMB + 24) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (src, out, label) in enumerate(rows):
        y = 10 + i * (THUMB + 24)
        draw.text((10, y), label, fill="black")
        for j, data in enumerate((src, out)):
            img = Image.open(io.BytesIO(data)).convert("RGBA")
            img.thumbnail((THUMB, THUMB))
            tile = Image.new("RGBA", img.size, "white")
            checker = ImageDraw.Draw(tile)
            for cy in range(0, img.height, 12):
                for cx in range((cy // 12 % 2) * 12, img.width, 24):
                    checker.rectangle((cx, cy, cx + 11, cy + 11), fill=(215, 215, 215, 255))
            tile.alpha_composite(img)
            sheet.paste(tile.convert("RGB"), (10 + j * (THUMB + 10), y + 14))
    sheet.save(path)


def _seconds(doc: dict) -> float | None:
    """From submission to the end, as the service recorded it."""
    try:
        start, end = (datetime.fromisoformat(doc[k].replace("Z", "+00:00")) for k in ("created_at", "finished_at"))
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    return (end - start).total_seconds()


def run_jobs(url: str, api_key: str, out: Path, timeout: float = JOB_TIMEOUT_SECONDS) -> int:
    """Every demo job through the API at ``url``; the table, the results and the contact sheet."""
    from maskq.local.client import Client

    client = Client(url, api_key)
    logo_key = client.upload(SAMPLES / LOGO)
    submitted = []
    for name, op, params in DEMO_JOBS:
        sent = {k: (logo_key if v == LOGO else v) for k, v in params.items()}
        submitted.append((name, op, params, client.submit(SAMPLES / name, op, sent)))
    print(f"{len(submitted)} jobs submitted to {url}; waiting ...", flush=True)

    rows, failures = [], 0
    print(f"\n{'job':<34} {'operation':<9} {'input':<14} {'state':<9} {'seconds':>7}  output")
    for i, (name, op, params, job) in enumerate(submitted, 1):
        try:
            doc = client.wait(job["id"], timeout=timeout)
        except MaskqError as err:
            doc = {**job, "state": f"{err.code}"}
        seconds = _seconds(doc)
        shown = f"{seconds:7.2f}" if seconds is not None else f"{'-':>7}"
        if doc["state"] != "succeeded":
            failures += 1
            error = doc.get("error") or {}
            detail = f"{error.get('code', '')}: {error.get('message', '')}" if error else ""
            print(f"{doc['id']:<34} {op:<9} {name:<14} {doc['state']:<9} {shown}  {detail}")
            continue
        suffix = Path(urllib.parse.urlparse(doc.get("result_url") or "").path).suffix or ".bin"
        target = client.download(doc["id"], out / f"{i:02d}-{Path(name).stem}-{op}{suffix}")
        label = f"{i}. {op} ({doc.get('model') or 'no matte'} model) {params or ''}"
        rows.append(((SAMPLES / name).read_bytes(), target.read_bytes(), label))
        print(f"{doc['id']:<34} {op:<9} {name:<14} {doc['state']:<9} {shown}  {target}")
    sheet = out / "contact-sheet.png"
    contact_sheet(rows, sheet)
    print(f"\n{len(submitted) - failures} of {len(submitted)} jobs succeeded; contact sheet: {sheet}")
    return 1 if failures else 0


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the stack's stop


def main(argv: list[str] | None = None) -> int:
    from maskq.local.up import PortInUseError, Stack

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where results go (default: out/demo)")
    parser.add_argument("--timeout", type=float, default=JOB_TIMEOUT_SECONDS, help="seconds to wait for each job")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    state = Path(tempfile.mkdtemp(prefix="maskq-demo-"))
    t0 = time.perf_counter()
    code = 3
    try:
        print(f"starting the service (state in {state}) ...", flush=True)
        with Stack(state, api_port=0, log=lambda msg: print(msg, flush=True)) as stack:
            print(f"service up in {time.perf_counter() - t0:.1f} s at {stack.url}", flush=True)
            code = 1  # from here a failure is the jobs', not the start's
            code = run_jobs(stack.url, stack.api_key, args.out, args.timeout)
            print("stopping the service ...", flush=True)
    except (PortInUseError, MaskqError) as err:
        print(f"maskq demo: {err.code}: {err.message}", file=sys.stderr)
    finally:
        if code == 0:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"maskq demo: logs kept in {state}", file=sys.stderr)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
