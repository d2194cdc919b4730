"""Upload abuse against the API (issue 19): each abuse must get a clean 4xx, nothing stored, no 5xx,
and the API process must stay under 500 MB of resident memory.

    python bench/upload_abuse.py                  # starts Redis, S3 and the API itself (no worker)
    python bench/upload_abuse.py --flood 20 --flood-mb 10 --body-timeout 5     # a quick run
    python bench/upload_abuse.py --url http://127.0.0.1:8000 --key KEY --api-pid PID

The cases, at the issue's size by default:

1. ``bombs``: a PNG declaring 100000x100000 and WebPs declaring 16383x16383 (the format's largest)
   in a few dozen bytes; a PNG whose iCCP chunk inflates to 2 GB; a PNG whose header is an honest
   64x64 but whose pixel stream inflates to ~50 GB (the API never inflates it and takes it: the
   worker's decoder stops after the 64 rows the header declares).
2. ``truncated``: a 50 MB body cut in half by a client that then closes (with ``Content-Length``, and
   chunked without its last chunk), and a whole body without its multipart closing boundary.
3. ``slow``: ``--slow`` clients sending their body at one byte a second (408 after the body timeout).
4. ``flood``: ``--flood`` (100) concurrent uploads of ``--flood-mb`` (50) MB each (429 past the upload
   budget, with ``Retry-After``).

Started here (the default), the stack is ``maskq.local.embedded``'s Redis and S3 and one ``uvicorn
api.main:app`` process with the shipped settings (``--body-timeout`` and ``--budget-mb`` override
two), as ``bench/api_enqueue.py`` runs it. The table gives, per case: the answers the server counted
(``/metrics``, which also counts the requests whose client left before any answer), the answers the
clients read, the 5xx among either, the input objects and job records written, and the API's peak
resident memory during the case (VmRSS from ``/proc/PID/status`` every 20 ms; VmHWM at the end).
Against ``--url`` the objects are counted only when this machine's ``MASKQ_*`` settings reach the
same S3 and Redis, and memory only with ``--api-pid``.

The raw-socket clients here are what ``tests/api/test_upload_abuse.py`` runs at a smaller size.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq import defaults  # noqa: E402

KEY = "bench-key-0123456789"
MB = 1_000_000
SEND_CHUNK = 256 * 1024
RSS_GOAL_MB = 500


# ---- what the abusive clients send -------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _ihdr(width: int, height: int) -> bytes:
    return _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB, in a few dozen bytes."""
    return (b"\x89PNG\r\n\x1a\n" + _ihdr(width, height) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def webp_declaring(width: int, height: int, animated: bool = True) -> bytes:
    """A WebP (extended format) whose canvas is ``width`` x ``height`` (at most 16384 each), made from
    a 4x4 image by rewriting the canvas size in its VP8X chunk."""
    frames = [Image.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    if animated:
        frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    else:  # EXIF makes Pillow write the extended (VP8X) form of a still image
        frames[0].save(buf, "WEBP", lossless=True, exif=b"Exif\0\0MM\0*\0\0\0\x08\0\0")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"VP8X"
    data[24:27] = (width - 1).to_bytes(3, "little")
    data[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def _zeros_deflated(megabytes: int) -> bytes:
    """A zlib stream of ``megabytes`` MiB of zeros (~1 KB per MiB), built by repeating one fully
    flushed block: compressing 50 GB for real would take minutes. Its checksum is wrong, which
    nothing reaches: a decoder stops when the image's rows are full."""
    c = zlib.compressobj(9)
    first = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return first + again * (megabytes - 1) + c.flush()


def png_inflating(width: int, height: int, megabytes: int) -> bytes:
    """An honest ``width`` x ``height`` header over a pixel stream that inflates to ``megabytes`` MiB."""
    return (b"\x89PNG\r\n\x1a\n" + _ihdr(width, height) + _png_chunk(b"IDAT", _zeros_deflated(megabytes))
            + _png_chunk(b"IEND", b""))


def png_iccp_bomb(megabytes: int) -> bytes:
    """A small PNG whose ICC profile chunk (read with the header) inflates to ``megabytes`` MiB."""
    pixels = zlib.compress(b"\0" * (1 + 3 * 8) * 8)
    return (b"\x89PNG\r\n\x1a\n" + _ihdr(8, 8) + _png_chunk(b"iCCP", b"icc\0\0" + _zeros_deflated(megabytes))
            + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b""))


def noise_png(nbytes: int, seed: int = 0) -> bytes:
    """A real RGB PNG of about ``nbytes`` (random pixels, stored uncompressed): an honest large upload."""
    side = max(8, int((nbytes / 3) ** 0.5))
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def form(parts: list[tuple[str, str | None, bytes]], boundary: str = "maskq-abuse-boundary") -> tuple[bytes, str]:
    """A multipart body with ``(name, filename or None, data)`` parts in this order, and its type."""
    out = io.BytesIO()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def job_form(image: bytes, params: str = '{"format": "png"}') -> tuple[bytes, str]:
    """``POST /v1/jobs``'s body: the image first, the text fields after it."""
    return form([("image", "a.png", image), ("operation", None, b"remove"), ("params", None, params.encode())])


def without_closing_boundary(body: bytes, ctype: str) -> bytes:
    """The body up to its last part's data: every byte but the closing ``\\r\\n--boundary--\\r\\n``."""
    boundary = ctype.split("boundary=", 1)[1].encode()
    return body[: body.rindex(b"\r\n--" + boundary + b"--")]


# ---- raw HTTP: what a browser or curl would not do ---------------------------------------------------


@dataclass
class Answer:
    """What a client read: the status (None when the connection ended without an answer), the
    headers (lower-case names), the JSON body, the seconds from the first byte sent, the body bytes sent."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    doc: Any = None
    seconds: float = 0.0
    sent: int = 0

    @property
    def code(self) -> str | None:
        return ((self.doc.get("error") or {}).get("code")) if isinstance(self.doc, dict) else None


def open_request(port: int, key: str, headers: dict[str, str], path: str = "/v1/jobs",
                 host: str = "127.0.0.1", timeout: float = 60) -> socket.socket:
    """A connection that has sent a POST's request line and headers, and nothing of the body yet."""
    sock = socket.create_connection((host, port), timeout=timeout)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Bearer {key}",
             *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def answered(sock: socket.socket, wait: float = 0.0) -> bool:
    """Whether the server has sent something (an early answer) or closed."""
    return bool(select.select([sock], [], [], wait)[0])


def read_answer(sock: socket.socket) -> Answer:
    """The server's answer on this connection; status None when it closed (or reset) without one."""
    resp = http.client.HTTPResponse(sock)
    try:
        resp.begin()
        data = resp.read()
    except (OSError, http.client.HTTPException):
        return Answer(None)
    try:
        doc = json.loads(data)
    except ValueError:
        doc = data
    return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, doc)


def send_body(sock: socket.socket, body: bytes, *, chunked: bool = False, finish: bool = True,
              pace: float = 0.0, piece: int = SEND_CHUNK) -> int:
    """Send ``body`` in pieces (as chunks of a chunked body when ``chunked``, then its last chunk if
    ``finish``; ``pace`` seconds between pieces), stopping as soon as the server answers or the
    connection breaks (a refused upload is answered early and its connection closed). Returns the
    body bytes sent."""
    sent = 0
    try:
        while sent < len(body):
            if answered(sock, pace):
                return sent
            data = body[sent: sent + piece]
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
            sent += len(data)
        if chunked and finish:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    return sent


def upload(port: int, key: str, body: bytes, ctype: str, *, chunked: bool = False,
           host: str = "127.0.0.1") -> Answer:
    """One POST /v1/jobs sending the whole body (declared, or chunked), then its answer."""
    t0 = time.monotonic()
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(body))}
    sock = open_request(port, key, {"Content-Type": ctype, **framing}, host=host)
    try:
        sent = send_body(sock, body, chunked=chunked)
        answer = read_answer(sock)
    finally:
        sock.close()
    answer.seconds, answer.sent = time.monotonic() - t0, sent
    return answer


def cut_short(port: int, key: str, body: bytes, ctype: str, *, chunked: bool = False,
              host: str = "127.0.0.1") -> Answer:
    """Send half of ``body`` (declared whole, or chunked without its last chunk), then close."""
    framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(len(body))}
    sock = open_request(port, key, {"Content-Type": ctype, **framing}, host=host)
    sent = send_body(sock, body[: len(body) // 2], chunked=chunked, finish=False)
    sock.close()
    return Answer(None, sent=sent)


def slow_upload(port: int, key: str, body: bytes, ctype: str, *, give_up: float,
                host: str = "127.0.0.1") -> Answer:
    """Send ``body`` one byte a second, declared in full, until the server answers (or ``give_up`` s)."""
    t0 = time.monotonic()
    sock = open_request(port, key, {"Content-Type": ctype, "Content-Length": str(len(body))}, host=host)
    sent = 0
    try:
        while sent < len(body) and time.monotonic() - t0 < give_up and not answered(sock, 1.0):
            sock.sendall(body[sent: sent + 1])
            sent += 1
        answer = read_answer(sock) if answered(sock, 5.0) else Answer(None)
    except OSError:
        answer = Answer(None)
    finally:
        sock.close()
    answer.seconds, answer.sent = time.monotonic() - t0, sent
    return answer


# ---- what the server did -----------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of ``/proc/PID/status``, in kB (empty when the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, _, v in (ln.partition(":") for ln in lines) if k.startswith("Vm")}


class RssSampler:
    """The highest VmRSS of a process, read every ``every`` seconds in a thread, between start and stop."""

    def __init__(self, pid: int | None, every: float = 0.02) -> None:
        self.pid, self.every = pid, every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        if self.pid is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, proc_status(self.pid or 0).get("VmRSS", 0))
            self._stop.wait(self.every)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def server_statuses(url: str) -> Counter[str]:
    """``maskq_http_requests_total`` by status over every route but ``/metrics`` itself."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    out: Counter[str] = Counter()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "maskq_http_requests_total" and s.labels.get("route") != "/metrics":
                out[s.labels["status"]] += int(s.value)
    return out


class Store:
    """Counts what the API wrote: objects in the input bucket, job records in Redis."""

    def __init__(self, settings: Any) -> None:
        import redis

        from maskq.service.storage import Storage

        self.storage = Storage.from_settings(settings)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.bucket = settings.input_bucket

    def counts(self) -> tuple[int, int]:
        objects = sum(1 for _ in self.storage.client.list_objects(self.bucket, recursive=True))
        records = sum(1 for _ in self.redis.scan_iter(f"{defaults.REDIS_KEY_PREFIX}:job:*", count=1000))
        return objects, records


# ---- the stack -------------------------------------------------------------------------------------


class LocalStack:
    """Redis, S3 (``maskq.local.embedded``) and one uvicorn API process, as ``bench/api_enqueue.py``
    starts them; no worker (accepted jobs stay queued)."""

    def __init__(self, env: dict[str, str]) -> None:
        from maskq.local.embedded import RedisServer, S3Server, free_port

        work = Path(tempfile.mkdtemp(prefix="maskq-bench-abuse-"))
        self.redis = RedisServer(workdir=work / "redis")
        self.s3 = S3Server("bench", "bench-secret-0123456789", workdir=work / "s3")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env
        self.api: subprocess.Popen | None = None
        self.settings: Any = None

    def __enter__(self) -> LocalStack:
        from maskq.settings import load_settings

        self.redis.start()
        self.s3.start()
        env = {"MASKQ_REDIS_URL": self.redis.url, "MASKQ_S3_ENDPOINT": self.s3.endpoint,
               "MASKQ_S3_ACCESS_KEY": "bench", "MASKQ_S3_SECRET_KEY": "bench-secret-0123456789",
               "MASKQ_API_KEYS": f"{KEY}:bench", "MASKQ_BACKLOG_LIMIT": str(10**9), "MASKQ_LOG_LEVEL": "WARNING",
               **self.extra_env}
        self.settings = load_settings(**{k.removeprefix("MASKQ_").lower(): v for k, v in env.items()})
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning", "--no-access-log"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env}, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(self.url + "/readyz", timeout=2).status == 200:
                    return self
            except OSError:
                if time.monotonic() > deadline or self.api.poll() is not None:
                    self.__exit__()
                    raise SystemExit("the API did not start") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.api is not None and self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGTERM)
            try:
                self.api.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.api.pid, signal.SIGKILL)
                self.api.wait()
        self.s3.cleanup()
        self.redis.cleanup()


# ---- the cases -------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    server: Counter[str]
    client: Counter[str]
    fivexx: int
    objects: int | str
    records: int | str
    peak_rss_mb: float | str
    seconds: float
    notes: str = ""


def bombs(port: int, key: str) -> Iterator[Answer]:
    for image in (png_declaring(100_000, 100_000), webp_declaring(16383, 16383),
                  webp_declaring(16383, 16383, animated=False), png_iccp_bomb(2048)):
        body, ctype = job_form(image)
        yield upload(port, key, body, ctype)
    body, ctype = job_form(png_inflating(64, 64, 50_000))  # ~50 MB inflating to ~50 GB: taken (202)
    yield upload(port, key, body, ctype)


def truncated(port: int, key: str, body: bytes, ctype: str) -> Iterator[Answer]:
    yield cut_short(port, key, body, ctype)
    yield cut_short(port, key, body, ctype, chunked=True)
    yield upload(port, key, without_closing_boundary(body, ctype), ctype)


def run_case(name: str, make: Callable[[], Iterator[Answer]], url: str, pid: int | None, store: Store | None,
             notes: str = "") -> Row:
    before = server_statuses(url)
    counts0 = store.counts() if store else None
    t0 = time.monotonic()
    with RssSampler(pid) as rss:
        answers = list(make())
        time.sleep(0.5)  # the requests whose client left are answered (and counted) a moment later
    seconds = time.monotonic() - t0
    server = server_statuses(url) - before
    client = Counter(str(a.status) if a.status is not None else "none" for a in answers)
    fivexx = sum(n for s, n in server.items() if s.startswith("5")) + sum(
        n for s, n in client.items() if s.startswith("5"))
    if store and counts0:
        objects, records = (a - b for a, b in zip(store.counts(), counts0, strict=True))
    else:
        objects = records = "n/a"
    refused = [a for a in answers if a.status == 429]
    if refused:
        with_retry = sum(1 for a in refused if a.headers.get("retry-after"))
        notes += f"; Retry-After on {with_retry} of {len(refused)} 429s"
    return Row(name, server, client, fivexx, objects, records,
               round(rss.peak_kb / 1024, 1) if pid else "n/a", round(seconds, 1), notes)


def report(rows: list[Row], pid: int | None) -> None:
    def fmt(c: Counter[str]) -> str:
        return " ".join(f"{s}:{n}" for s, n in sorted(c.items())) or "-"

    print(f"\n{'case':<10} {'server answered':<22} {'clients read':<22} {'5xx':>4} {'objects':>8} {'records':>8} "
          f"{'peak RSS MB':>12} {'s':>6}  notes")
    for r in rows:
        print(f"{r.case:<10} {fmt(r.server):<22} {fmt(r.client):<22} {r.fivexx:>4} {r.objects!s:>8} "
              f"{r.records!s:>8} {r.peak_rss_mb!s:>12} {r.seconds:>6}  {r.notes}")
    if pid:
        hwm = proc_status(pid).get("VmHWM", 0) / 1024
        peak = max([hwm] + [r.peak_rss_mb for r in rows if isinstance(r.peak_rss_mb, float)])
        verdict = "met" if peak < RSS_GOAL_MB else "NOT met"
        print(f"\nAPI VmHWM (peak since start) {hwm:.1f} MB; goal: under {RSS_GOAL_MB} MB: {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an API already running (default: start Redis, S3 and the API here)")
    ap.add_argument("--key", default=KEY, help="its API key")
    ap.add_argument("--api-pid", type=int, help="its process id, for the memory column")
    ap.add_argument("--flood", type=int, default=100, help="concurrent uploads in the flood case")
    ap.add_argument("--flood-mb", type=float, default=50, help="MB per flood upload")
    ap.add_argument("--slow", type=int, default=10, help="concurrent one-byte-a-second clients")
    ap.add_argument("--body-timeout", type=float, help="MASKQ_BODY_TIMEOUT_SECONDS of the API started here")
    ap.add_argument("--budget-mb", type=float, help="MASKQ_UPLOAD_BUDGET_BYTES / 1e6 of the API started here")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    env: dict[str, str] = {}
    if args.body_timeout:
        env["MASKQ_BODY_TIMEOUT_SECONDS"] = str(args.body_timeout)
    if args.budget_mb:
        env["MASKQ_UPLOAD_BUDGET_BYTES"] = str(int(args.budget_mb * MB))
    print(f"building payloads: {args.flood_mb:g} MB PNG ...", file=sys.stderr, flush=True)
    big = noise_png(int(args.flood_mb * MB) - 4096)
    big_body, big_ctype = job_form(big)

    stack = LocalStack(env) if args.url is None else None
    with stack if stack is not None else contextlib.nullcontext():
        if stack is not None:
            url, pid, settings = stack.url, stack.api.pid if stack.api else None, stack.settings
        else:
            from maskq.settings import load_settings

            url, pid, settings = args.url.rstrip("/"), args.api_pid, load_settings()
        port = int(url.rsplit(":", 1)[1])
        try:
            store: Store | None = Store(settings)
            assert store is not None
            store.counts()
        except Exception as exc:  # noqa: BLE001 - another deployment's S3/Redis: report without the counts
            print(f"objects and records not counted: {exc}", file=sys.stderr)
            store = None
        timeout = float(env.get("MASKQ_BODY_TIMEOUT_SECONDS", 0)) or (settings.body_timeout_seconds if stack else 60)
        small_body, small_ctype = job_form(noise_png(4000))
        rows = [
            run_case("bombs", lambda: bombs(port, args.key), url, pid, store,
                     "413 x3 (pixels), 422 (iCCP 2 GB), 202 (honest 64x64 header, ~50 GB stream)"),
            run_case("truncated", lambda: truncated(port, args.key, big_body, big_ctype), url, pid, store,
                     "half of a declared body + close; chunked without its last chunk; no closing boundary"),
            run_case("slow", lambda: _parallel(args.slow, lambda _: slow_upload(
                port, args.key, small_body, small_ctype, give_up=timeout + 30)), url, pid, store,
                     f"{args.slow} clients at 1 byte/s"),
            run_case("flood", lambda: _parallel(args.flood, lambda _: upload(port, args.key, big_body, big_ctype)),
                     url, pid, store, f"{args.flood} x {len(big_body) / MB:.1f} MB at once"),
        ]
        report(rows, pid)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    return 0 if all(r.fivexx == 0 for r in rows) else 1


def _parallel(n: int, fn: Callable[[int], Answer]) -> Iterator[Answer]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        yield from pool.map(fn, range(n))


if __name__ == "__main__":
    raise SystemExit(main())
