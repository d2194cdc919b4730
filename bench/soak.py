"""Soak: thousands of jobs through one worker; does its memory creep?

    python bench/soak.py                       # 2,000 jobs, checkpoints at 100, 500, 1000, 2000
    python bench/soak.py --jobs 300 --checkpoints 100,300

Starts the whole service as ``maskq up`` does (embedded Redis and S3, one Celery worker with its
default pool, the API; :class:`maskq.local.up.Stack`) in a temporary state directory and sends jobs
through the HTTP API, at most ``--in-flight`` at a time, cycling through every matte operation and
photos of 0.3 to 2 MP cut from ``samples/`` (every 200th is a 12 MP photo: the large buffers are
what fragments a heap). After the Nth job has finished it prints the resident memory (VmRSS) of
the worker's main process, of its pool children (summed; children replaced by
``worker_max_tasks_per_child`` or ``worker_max_memory_per_child`` are counted as they are now) and
of the API process. Goal (issue 19): worker RSS after 2,000 jobs within 15 % of its value after 100.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq.local.client import Client  # noqa: E402
from maskq.local.up import Stack  # noqa: E402

OPERATIONS = [
    ("remove", {}),
    ("mask", {}),
    ("swap", {"background_color": "#ffffff"}),
    ("blur", {"strength": 40}),
]
SIZES_MP = (0.3, 0.6, 1.0, 2.0)
LARGE_EVERY = 200  # one 12 MP photo every 200 jobs
LARGE_MP = 12.0


def photo(source: Image.Image, megapixels: float) -> bytes:
    """``source`` resized to about ``megapixels``, as a JPEG (what shops send)."""
    scale = (megapixels * 1e6 / (source.width * source.height)) ** 0.5
    img = source.resize((max(1, round(source.width * scale)), max(1, round(source.height * scale))),
                        Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def worker_pid(stack: Stack) -> int:
    """The Celery main process (the worker component may be a wrapper leading a process group)."""
    assert stack.worker is not None and stack.worker.proc is not None
    return stack.worker.proc.pid


def measure(stack: Stack, done: int, started: float) -> dict[str, float]:
    main = worker_pid(stack)
    kids = children(main)
    assert stack.api is not None and stack.api.proc is not None
    row = {"jobs": done, "seconds": round(time.monotonic() - started, 1),
           "worker_main_mb": round(rss_mb(main), 1),
           "worker_children_mb": round(sum(rss_mb(k) for k in kids), 1),
           "children": len(kids),
           "api_mb": round(rss_mb(stack.api.proc.pid), 1)}
    row["worker_total_mb"] = round(row["worker_main_mb"] + row["worker_children_mb"], 1)
    return row


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    sources = [Image.open(REPO / "samples" / n).convert("RGB") for n in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")]
    photos = {(i, mp): photo(src, mp) for i, src in enumerate(sources) for mp in (*SIZES_MP, LARGE_MP)}
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    rows: list[dict[str, float]] = []
    failed: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="maskq-soak-") as state, \
            Stack(Path(state), api_port=0, concurrency=args.concurrency) as stack:
        client = Client(stack.url, stack.api_key, timeout=120)
        in_flight: deque[str] = deque()
        submitted, done, started = 0, 0, time.monotonic()
        while done < args.jobs:
            while submitted < args.jobs and len(in_flight) < args.in_flight:
                op, params = OPERATIONS[submitted % len(OPERATIONS)]
                mp = LARGE_MP if submitted % LARGE_EVERY == LARGE_EVERY - 1 else SIZES_MP[submitted % len(SIZES_MP)]
                in_flight.append(client.submit(photos[(submitted % len(sources), mp)], op, params)["id"])
                submitted += 1
            job = client.wait(in_flight.popleft(), timeout=300)
            done += 1
            if job["state"] != "succeeded":
                code = (job.get("error") or {}).get("code", job["state"])
                failed[code] = failed.get(code, 0) + 1
            if done in checkpoints:
                rows.append(measure(stack, done, started))
                print(json.dumps(rows[-1]), flush=True)
        if stack.dead() is not None:
            raise SystemExit(f"{stack.dead().name} died during the soak")
    print(f"\nfailed jobs: {failed or 'none'}")
    return rows


def report(rows: list[dict[str, float]]) -> None:
    first = rows[0]
    print(f"\n{'jobs':>6} {'s':>7} {'worker main':>12} {'children':>9} {'(n)':>4} {'worker total':>13} "
          f"{'growth':>7} {'API':>7}")
    for r in rows:
        growth = (r["worker_total_mb"] / first["worker_total_mb"] - 1) * 100
        print(f"{r['jobs']:>6} {r['seconds']:>7} {r['worker_main_mb']:>10} MB {r['worker_children_mb']:>6} MB "
              f"{r['children']:>4} {r['worker_total_mb']:>10} MB {growth:>+6.1f}% {r['api_mb']:>4} MB")
    last = rows[-1]
    growth = (last["worker_total_mb"] / first["worker_total_mb"] - 1) * 100
    verdict = "met" if abs(growth) <= 15 else "NOT met"
    print(f"\nworker RSS after {last['jobs']} jobs vs after {first['jobs']}: {growth:+.1f}% "
          f"(goal within 15 %: {verdict})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--checkpoints", default="100,500,1000,2000")
    p.add_argument("--in-flight", type=int, default=8, help="jobs submitted and not yet finished, at most")
    p.add_argument("--concurrency", type=int, default=None, help="worker pool size (default: maskq up's)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    rows = run(args)
    if not rows:
        raise SystemExit("no checkpoint reached")
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
