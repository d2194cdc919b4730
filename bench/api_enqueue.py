"""Enqueue latency of the HTTP API: POST /v1/jobs (multipart, a small PNG) at a fixed rate.

    python bench/api_enqueue.py                      # 200 requests/s for 10 s (2,000 requests)
    python bench/api_enqueue.py --rate 100 --count 500 --json out.json

Starts its own real Redis and S3 (``maskq.local.embedded``, loopback) and ``uvicorn api.main:app`` (one
process, as one pod runs it; ``--api-workers N`` for more), with the backlog limit raised so that no
request is refused (no worker runs: jobs stay queued). The load generator is open-loop and bounded:
request ``i`` is due at ``t0 + i / rate`` whatever happened before, over a fixed pool of keep-alive
connections; it stops after ``--count`` requests or ``--max-seconds``, whichever comes first.
Latency is measured from the moment a request was due (so a stalled server is not hidden by a
generator that waits for it, "coordinated omission") to the last byte of its answer; the pure
service time (send to answer) is printed too. Everything runs on this machine: the generator's own
CPU competes with the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq.local.client import _multipart  # noqa: E402
from maskq.local.embedded import RedisServer, S3Server, free_port  # noqa: E402

KEY = "bench-key-0123456789"


def small_png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, np.full_like(xx, 90)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(port: int, rate: float, count: int, max_seconds: float, connections: int) -> dict:
    body, ctype = _multipart({"operation": "remove", "params": '{"format": "png"}'}, [("image", "a.png", small_png())])
    request = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    stop_at = t0 + max_seconds

    async def fire(due: float) -> None:
        conn = await pool.get()
        start = loop.time()
        try:
            status = await _one(*conn, request)
        except (OSError, asyncio.IncompleteReadError) as exc:
            status = -1
            print("request failed:", exc, file=sys.stderr)
            conn = await asyncio.open_connection("127.0.0.1", port)
        end = loop.time()
        pool.put_nowait(conn)
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(end - due)
        service.append(end - start)

    tasks = []
    for i in range(count):
        due = t0 + i / rate
        if due > stop_at:
            break
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - t0
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    ms = [x * 1000 for x in latencies]
    sv = [x * 1000 for x in service]
    return {"requests": len(ms), "seconds": round(elapsed, 2), "achieved_rate": round(len(ms) / elapsed, 1),
            "target_rate": rate, "statuses": statuses,
            "latency_ms": {"p50": round(percentile(ms, 50), 2), "p90": round(percentile(ms, 90), 2),
                           "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2),
                           "mean": round(statistics.fmean(ms), 2)},
            "service_ms": {"p50": round(percentile(sv, 50), 2), "p99": round(percentile(sv, 99), 2)}}


def _cpu_seconds(pid: int, children: bool = True) -> float:
    """user + system CPU time of a process and (``children``) its live descendants (uvicorn
    --workers), Linux /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not children:
        return total
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(_cpu_seconds(int(k)) for k in kids)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    ap.add_argument("--count", type=int, default=2000, help="requests in the measured run")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="hard stop for the measured run")
    ap.add_argument("--warmup", type=int, default=200, help="requests before measuring (at the same rate)")
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections of the generator")
    ap.add_argument("--api-workers", type=int, default=1,
                    help="uvicorn worker processes (one pod's process by default)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="maskq-bench-api-"))
    redis = RedisServer(workdir=work / "redis")
    s3 = S3Server("bench", "bench-secret-0123456789", workdir=work / "s3")
    api = None
    try:
        redis.start()
        s3.start()
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), "MASKQ_REDIS_URL": redis.url, "MASKQ_S3_ENDPOINT": s3.endpoint,
               "MASKQ_S3_ACCESS_KEY": "bench", "MASKQ_S3_SECRET_KEY": "bench-secret-0123456789",
               "MASKQ_API_KEYS": f"{KEY}:bench", "MASKQ_BACKLOG_LIMIT": str(10**9), "MASKQ_LOG_LEVEL": "WARNING"}
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
                                str(port), "--log-level", "warning", "--no-access-log",
                                "--workers", str(args.api_workers)], cwd=REPO, env=env,
                               start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise SystemExit("the API did not start") from None
                time.sleep(0.1)
        if args.warmup:
            asyncio.run(load(port, args.rate, args.warmup, args.max_seconds, args.connections))
        # every process on these cores, so a saturated run shows where the CPU went
        pids = {"api": api.pid, "s3": s3.proc.pid, "redis": redis.proc.pid, "load_generator": os.getpid()}

        def cpu(name: str) -> float:  # the generator's process is the parent of all the others
            return _cpu_seconds(pids[name], children=name != "load_generator")

        cpu0 = {name: cpu(name) for name in pids}
        res = asyncio.run(load(port, args.rate, args.count, args.max_seconds, args.connections))
        n = max(1, res["requests"])
        res["cpu_ms_per_request"] = {name: round((cpu(name) - cpu0[name]) * 1000 / n, 2) for name in pids}
        res["server_cpu_ms_per_request"] = res["cpu_ms_per_request"]["api"]
        res["cpus"] = os.cpu_count()
        res["loadavg_1m"] = round(os.getloadavg()[0], 2)
        lat = res["latency_ms"]
        print(f"POST /v1/jobs, {res['requests']} requests at {res['target_rate']:.0f}/s "
              f"(achieved {res['achieved_rate']}/s over {res['seconds']} s), statuses {res['statuses']}")
        print(f"latency ms: p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}  "
              f"(service p50 {res['service_ms']['p50']}, p99 {res['service_ms']['p99']}); "
              f"load average {res['loadavg_1m']} on {res['cpus']} cores; "
              f"server CPU {res['server_cpu_ms_per_request']} ms/request")
        print("CPU ms per request by process: " + ", ".join(f"{k} {v}" for k, v in res["cpu_ms_per_request"].items()))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2) + "\n")
        return 0 if set(res["statuses"]) == {202} else 1
    finally:
        if api is not None and api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(api.pid, signal.SIGKILL)
                api.wait()
        s3.cleanup()
        redis.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
