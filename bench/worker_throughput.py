"""What the queue costs: a real Celery worker with N processes against the raw pipeline, same images.

    python bench/worker_throughput.py [--images 48] [--procs 1,2] [--size 640x480] [--operation remove]

1. Raw: the pipeline in this process (model loaded once, ONNX Runtime on every core), one image
   after another, bytes in -> bytes out: the ceiling.
2. Worker: embedded redis-server and `weed mini` (maskq.local.embedded), a `celery -A worker.app worker`
   with N prefork processes (each with cores/N ONNX threads). Inputs are stored in S3 and records
   written first (that is the API's work); the clock runs from the first task sent to the last job
   recorded as finished, so it covers the broker, the S3 read, the pipeline, the S3 write and the
   record updates.

Goal (issue 6): the best worker configuration reaches >= 85 % of the raw images per second.
The photos are samples/ JPEGs resized to --size. Results go to bench/results/worker_throughput.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq.local.embedded import RedisServer, S3Server  # noqa: E402
from maskq.service.records import JobStore, new_job_id  # noqa: E402
from maskq.service.storage import Storage  # noqa: E402
from maskq.settings import load_settings  # noqa: E402

ACCESS, SECRET = "bench", "bench-secret-0123456789"


def photos(n: int, size: tuple[int, int]) -> list[bytes]:
    sources = sorted((REPO / "samples").glob("*.jpg"))
    if not sources:
        raise SystemExit("samples/*.jpg not found")
    out = []
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def raw_rate(settings, images: list[bytes], operation: str) -> float:
    from maskq.pipeline import Pipeline

    pipe = Pipeline.load(settings)
    for data in images[:2]:
        pipe.process(data, operation, {})
    t0 = time.perf_counter()
    for data in images:
        pipe.process(data, operation, {})
    return len(images) / (time.perf_counter() - t0)


def worker_rate(settings, images: list[bytes], operation: str, procs: int, logdir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for k, v in settings.model_dump().items():
        env[f"MASKQ_{k.upper()}"] = str(v).lower() if isinstance(v, bool) else str(v)
    log = open(logdir / f"worker-{procs}.log", "wb")  # noqa: SIM115
    w = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "cpu", "-c", str(procs),
                          "--loglevel=INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
                          "-n", f"bench{procs}@127.0.0.1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            text = (logdir / f"worker-{procs}.log").read_text(errors="replace")
            if " ready." in text and text.count("model loaded") >= procs:
                break
            if w.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start:\n{text[-2000:]}")
            time.sleep(0.2)
        from maskq.service.queue import Publisher

        publisher = Publisher.from_settings(settings)
        jobs = JobStore.from_url(settings.redis_url)
        storage = Storage.from_settings(settings)
        # warm-up: one job per process, not timed
        ids = []
        for data in images[: 2 * procs] + images:
            jid = new_job_id()
            key = storage.put_input("bench", jid, data, extension="jpg", content_type="image/jpeg")
            jobs.create("bench", operation, {}, key, job_id=jid)
            ids.append(jid)
        warm, timed = ids[: 2 * procs], ids[2 * procs:]
        for jid in warm:
            publisher.send_job(jid)
        _wait(jobs, warm)
        t0 = time.perf_counter()
        for jid in timed:
            publisher.send_job(jid)
        _wait(jobs, timed)
        elapsed = time.perf_counter() - t0
        bad = [j for j in (jobs.get(i) for i in timed) if j.state.value != "succeeded"]
        if bad:
            raise SystemExit(f"{len(bad)} jobs did not succeed: {bad[0]}")
        publisher.app.close()
        return len(timed) / elapsed
    finally:
        w.send_signal(signal.SIGTERM)
        try:
            w.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()
        log.close()


def _wait(jobs: JobStore, ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending:
        pipe = jobs.r.pipeline(transaction=False)
        for i in pending:
            pipe.hget(jobs.job_key(i), "state")
        pending = [i for i, s in zip(pending, pipe.execute(), strict=True)
                   if s not in ("succeeded", "failed", "canceled")]
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} jobs still pending after {timeout} s")
        time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--procs", default="1,2", help="worker pool sizes to try, comma separated")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--operation", default="remove")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    images = photos(args.images, size)  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory(prefix="maskq-bench-") as tmp:
        redis = RedisServer(workdir=Path(tmp) / "redis")
        s3 = S3Server(ACCESS, SECRET, workdir=Path(tmp) / "s3")
        try:
            redis.start()
            s3.start()
            settings = load_settings(redis_url=redis.url, s3_endpoint=s3.endpoint, s3_access_key=ACCESS,
                                     s3_secret_key=SECRET)
            Storage.from_settings(settings).ensure_buckets()
            # raw is measured before and after the workers and the better run is the baseline: on a
            # shared machine this keeps a busy moment from flattering the worker
            rows = [("raw pipeline, run 1 (1 process, all cores)", raw_rate(settings, images, args.operation))]
            for n in (int(p) for p in args.procs.split(",")):
                rows.append((f"celery worker, {n} process(es)", worker_rate(settings, images, args.operation, n,
                                                                              Path(tmp))))
            rows.append(("raw pipeline, run 2", raw_rate(settings, images, args.operation)))
        finally:
            s3.cleanup()
            redis.cleanup()

    raw = max(rows[0][1], rows[-1][1])
    print(f"\n{args.images} images {args.size} JPEG, operation {args.operation!r}, {os.cpu_count()} CPUs\n")
    print(f"| {'mode':<42} | {'img/s':>6} | {'% of raw':>8} |")
    print(f"|{'-' * 44}|{'-' * 8}|{'-' * 10}|")
    for name, rate in rows:
        print(f"| {name:<42} | {rate:6.2f} | {100 * rate / raw:7.1f}% |")
    print(f"(load average during the run: {os.getloadavg()[0]:.1f})")
    best = max(r for name, r in rows if name.startswith("celery"))
    print(f"\nbest worker: {100 * best / raw:.1f}% of raw (goal >= 85%)")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker_throughput.json").write_text(json.dumps({
        "images": args.images, "size": args.size, "operation": args.operation,
        "rows": [{"mode": n, "images_per_second": r, "share_of_raw": r / raw} for n, r in rows],
    }, indent=2))


if __name__ == "__main__":
    main()
