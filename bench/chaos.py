"""Chaos: the whole stack under a steady stream of jobs while its parts are killed; is anything
lost, done twice or wrong?

    python bench/chaos.py                                # 500 jobs, 2 a second, seed 7
    python bench/chaos.py --jobs 40 --s3-down 8 --worker-kills 2 --json out.json   # what CI runs

Starts the service as ``maskq up`` does (:class:`maskq.local.up.Stack`: Redis with its append-only
file, S3, one worker with its default pool and settings, the API) in a temporary folder and sends
``--jobs`` jobs through the HTTP API at ``--rate`` a second: every operation, photos of 0.3 to
12 MP cut from ``samples/``, and a few invalid inputs (a truncated JPEG, a text file, a bad
parameter, a PNG that declares 100,000 x 100,000 pixels). Meanwhile, at times drawn from
``--seed``, it injects: worker processes SIGKILLed (``--worker-kills``, alternately one pool child,
as the OOM killer does, and the whole worker, as a lost node, started again at once), Redis
SIGKILLed and started again (once), S3 down for ``--s3-down`` seconds (once), the API SIGKILLed and
started again (once). The client does what a careful client does: it retries a submission that
got no answer, a 5xx or a 429, with the same Idempotency-Key.

At the end it checks and prints: every accepted job reached a terminal state (else: lost); every
valid job succeeded, and its result downloads, decodes and has the input's size (else: wrong);
each job has exactly one result object and the tenant has one job per submission (else:
duplicated); every invalid input was refused or failed with its stable code; and the time from the
end of the last fault until the last job finished. Exit status 0 when all hold.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from maskq.errors import MaskqError  # noqa: E402
from maskq.local.client import TERMINAL, Client, ConnectionFailed  # noqa: E402
from maskq.local.up import LOCAL_TENANT, Stack  # noqa: E402

OPERATIONS: list[tuple[str, dict[str, Any]]] = [
    ("remove", {}),
    ("mask", {}),
    ("swap", {"background_color": "#ffffff"}),
    ("blur", {"strength": 30}),
    ("crop", {}),
    ("faceblur", {}),
]
# photo sizes (MP) and how often each is drawn: mostly what shops send, and some 12 MP camera files
SIZES_MP = (0.3, 0.6, 1.0, 2.0, 4.0, 12.0)
SIZE_WEIGHTS = (30, 25, 20, 12, 8, 5)
# one invalid input in 60 jobs (at least 4: one of each kind), each with the code it must get
INVALID_EVERY = 60
INVALID_KINDS = ("truncated", "not_an_image", "bad_parameter", "bomb")
EXPECTED_CODE = {"truncated": "invalid_image", "not_an_image": "unsupported_format",
                 "bad_parameter": "invalid_parameter", "bomb": "image_too_large"}
# a submission that gets no answer (API or storage down) is retried this long with the same key
SUBMIT_PATIENCE_SECONDS = 120.0
# after the last submission, jobs get this long to finish before the unfinished ones count as lost
FINISH_TIMEOUT_SECONDS = 420.0
REDIS_DOWN_SECONDS = 2.0


# ---- what is sent ---------------------------------------------------------------------------------

@dataclass
class Case:
    index: int
    operation: str
    params: dict[str, Any]
    data: bytes = field(repr=False)
    size: tuple[int, int] | None  # the input's pixel size (None for an invalid input)
    invalid: str | None = None  # the INVALID_KINDS entry, None for a valid job

    @property
    def key(self) -> str:
        return f"chaos-{self.index}"


def photo(source: Image.Image, megapixels: float) -> tuple[bytes, tuple[int, int]]:
    scale = (megapixels * 1e6 / (source.width * source.height)) ** 0.5
    size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
    buf = io.BytesIO()
    source.resize(size, Image.Resampling.BILINEAR).save(buf, "JPEG", quality=88)
    return buf.getvalue(), size


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` RGB pixels, with a tiny first row: what a
    decompression bomb looks like before it is inflated."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def make_cases(n: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    sources = [Image.open(REPO / "samples" / f).convert("RGB") for f in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")]
    cache: dict[tuple[int, float], tuple[bytes, tuple[int, int]]] = {}
    invalid_at = {round((k + 0.5) * n / max(4, n // INVALID_EVERY)): k for k in range(max(4, n // INVALID_EVERY))}
    cases = []
    for i in range(n):
        src = rng.randrange(len(sources))
        mp = rng.choices(SIZES_MP, SIZE_WEIGHTS)[0]
        if (src, mp) not in cache:
            cache[(src, mp)] = photo(sources[src], mp)
        data, size = cache[(src, mp)]
        op, params = OPERATIONS[rng.randrange(len(OPERATIONS))]
        kind = INVALID_KINDS[invalid_at[i] % len(INVALID_KINDS)] if i in invalid_at else None
        if kind == "truncated":
            data, size = data[: len(data) * 3 // 5], None
        elif kind == "not_an_image":
            data, size = b"this is not an image\n" * 40, None
        elif kind == "bad_parameter":
            op, params, size = "blur", {"strength": 9999}, None
        elif kind == "bomb":
            data, size = bomb_png(), None
        cases.append(Case(i, op, dict(params), data, size, kind))
    return cases


# ---- the faults -----------------------------------------------------------------------------------

@dataclass
class Fault:
    at: float  # seconds after the first submission
    kind: str  # worker_child | worker_node | redis | s3 | api
    started: float | None = None
    recovered: float | None = None
    note: str = ""


def plan_faults(seed: int, window: float, worker_kills: int = 5) -> list[Fault]:
    """One fault per slot over 10-80 % of the sending window, in an order and at offsets drawn from
    ``seed`` (slots keep faults apart, so each one's recovery is seen alone as well as together)."""
    rng = random.Random(seed * 7919 + 1)
    kinds = [("worker_child" if k % 2 == 0 else "worker_node") for k in range(worker_kills)] + ["redis", "s3", "api"]
    rng.shuffle(kinds)
    slot = 0.7 * window / len(kinds)
    return [Fault(round(0.1 * window + slot * (i + rng.uniform(0.2, 0.8)), 1), kind) for i, kind in enumerate(kinds)]


class Injector(threading.Thread):
    """Runs the faults on the stack at their times (S3 comes back on a timer, so it overlaps others).

    The threads that start a component again stay alive until :meth:`release`: the servers are
    spawned with PR_SET_PDEATHSIG, which Linux fires when the spawning *thread* ends."""

    def __init__(self, stack: Stack, faults: list[Fault], t0: float, s3_down: float, log) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack, self.faults, self.t0, self.s3_down, self.log = stack, faults, t0, s3_down, log
        self.pending: list[threading.Event] = []  # set when a component on a timer is back
        self.done = threading.Event()
        self._released = threading.Event()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> None:
        for fault in self.faults:
            time.sleep(max(0.0, fault.at - self.now()))
            fault.started = round(self.now(), 1)
            try:
                getattr(self, f"_{fault.kind}")(fault)
            except Exception as exc:  # noqa: BLE001 - report it; the checks at the end tell the damage
                fault.note = f"injection failed: {exc}"
            self.log(f"  [{fault.started:6.1f} s] {fault.kind:<12} {fault.note}")
        for back in self.pending:
            back.wait(timeout=self.s3_down + 300)
        self.done.set()
        self._released.wait()

    def wait_done(self) -> None:
        self.done.wait()

    def release(self) -> None:
        self._released.set()

    def _worker_child(self, fault: Fault) -> None:
        main = self.stack.worker.proc.pid
        kids: list[int] = []
        for _ in range(100):  # a child replaced a moment ago may still be forking
            kids = [int(p) for p in Path(f"/proc/{main}/task/{main}/children").read_text().split()]
            if kids:
                break
            time.sleep(0.1)
        os.kill(kids[0], signal.SIGKILL)
        fault.note = f"SIGKILL pool child {kids[0]}"
        fault.recovered = round(self.now(), 1)  # the pool replaces it; the job it ran is redelivered

    def _worker_node(self, fault: Fault) -> None:
        w = self.stack.worker
        os.killpg(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
        w.proc = None
        w.start()
        fault.recovered = round(self.now(), 1)
        fault.note = f"SIGKILL whole worker, started again in {fault.recovered - fault.started:.1f} s"

    def _redis(self, fault: Fault) -> None:
        self.stack.redis.kill()
        time.sleep(REDIS_DOWN_SECONDS)
        self.stack.redis.start()
        fault.recovered = round(self.now(), 1)
        fault.note = f"SIGKILL, started again from its append-only file, down {fault.recovered - fault.started:.1f} s"

    def _s3(self, fault: Fault) -> None:
        self.stack.s3.kill()

        is_back = threading.Event()
        self.pending.append(is_back)

        def back() -> None:
            time.sleep(self.s3_down)
            try:
                self.stack.s3.start()
            except Exception as exc:  # noqa: BLE001 - reported; the checks at the end tell the damage
                fault.note += f"; could not start again: {exc}"
            fault.recovered = round(self.now(), 1)
            self.log(f"  [{fault.recovered:6.1f} s] s3           back after {fault.recovered - fault.started:.1f} s")
            is_back.set()
            self._released.wait()

        threading.Thread(target=back, daemon=True).start()
        fault.note = f"SIGKILL, back in {self.s3_down:.0f} s"

    def _api(self, fault: Fault) -> None:
        self.stack.api.kill()
        self.stack.api.start()
        fault.recovered = round(self.now(), 1)
        fault.note = f"SIGKILL, started again in {fault.recovered - fault.started:.1f} s"



# ---- the client side ------------------------------------------------------------------------------

@dataclass
class Sent:
    case: Case
    job_id: str | None = None
    refused: str | None = None  # the error code of a final refusal
    tries: int = 0


def submit(client: Client, case: Case) -> Sent:
    """Submit until answered: no answer, a 5xx or a 429 is retried with the same Idempotency-Key."""
    sent = Sent(case)
    deadline = time.monotonic() + SUBMIT_PATIENCE_SECONDS
    delay = 0.5
    while True:
        sent.tries += 1
        try:
            job = client.submit(case.data, case.operation, case.params, idempotency_key=case.key)
            sent.job_id = job["id"]
            return sent
        except MaskqError as err:
            status = getattr(err, "status", None)
            transient = isinstance(err, ConnectionFailed) or status is None or status >= 500 or status == 429
            if not transient or time.monotonic() > deadline:
                sent.refused = err.code
                return sent
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def wait_all(client: Client, ids: list[str], timeout: float) -> tuple[dict[str, dict], float]:
    """Poll every unfinished job until all have ended or ``timeout``; returns the documents and the
    monotonic time at which the last one was first seen finished."""
    docs: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    last_end = time.monotonic()
    while True:
        pending = [i for i in ids if docs.get(i, {}).get("state") not in TERMINAL]
        if not pending or time.monotonic() > deadline:
            return docs, last_end
        for jid in pending:
            try:
                docs[jid] = client.get(jid)
            except MaskqError:
                break  # the API is down for a moment: next round
            if docs[jid]["state"] in TERMINAL:
                last_end = time.monotonic()
        time.sleep(0.5)


def verify_result(client: Client, doc: dict, case: Case, tmp: Path) -> str | None:
    """None when the result downloads, decodes and has the input's size (crop: fits inside it)."""
    try:
        path = client.download(doc["id"], tmp / f"{doc['id']}.out")
        with Image.open(path) as img:
            img.load()
            size = img.size
        path.unlink()
    except Exception as exc:  # noqa: BLE001 - any failure here is a wrong result
        return f"result unreadable: {exc}"
    if case.operation == "crop":
        ok = size[0] <= case.size[0] and size[1] <= case.size[1]
    else:
        ok = size == case.size
    return None if ok else f"result is {size[0]}x{size[1]}, input {case.size[0]}x{case.size[1]}"


def result_objects(stack: Stack) -> Counter:
    """Result objects per job id, straight from S3 (a job done twice to different keys shows here)."""
    from minio import Minio

    s3 = Minio(stack.s3.endpoint, access_key=stack.s3.access_key, secret_key=stack.s3.secret_key, secure=False,
               region="us-east-1")
    keys = [o.object_name for o in s3.list_objects(stack.settings.result_bucket, prefix=f"{LOCAL_TENANT}/",
                                                   recursive=True)]
    return Counter(k.split("/")[1] for k in keys)


def tenant_job_count(client: Client) -> int:
    count, cursor = 0, None
    while True:
        page = client.list(limit=200, cursor=cursor)
        count += len(page["jobs"])
        cursor = page.get("next_cursor")
        if not cursor:
            return count


# ---- the run --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    cases = make_cases(args.jobs, args.seed)
    window = args.jobs / args.rate
    faults = plan_faults(args.seed, window, args.worker_kills)
    with tempfile.TemporaryDirectory(prefix="maskq-chaos-") as tmp_state, \
            Stack(args.state_dir or Path(tmp_state), api_port=0, concurrency=args.concurrency) as stack:
        client = Client(stack.url, stack.api_key, timeout=60)
        log(f"sending {args.jobs} jobs at {args.rate}/s (~{window:.0f} s), seed {args.seed}; faults:")
        t0 = time.monotonic()
        injector = Injector(stack, faults, t0, args.s3_down, log)
        injector.start()
        with ThreadPoolExecutor(max_workers=args.senders) as pool:
            futures = []
            for case in cases:
                time.sleep(max(0.0, t0 + case.index / args.rate - time.monotonic()))
                futures.append(pool.submit(submit, client, case))
            sent = [f.result() for f in futures]
        last_submit = time.monotonic() - t0
        injector.wait_done()
        ids = [s.job_id for s in sent if s.job_id]
        docs, last_end = wait_all(client, ids, FINISH_TIMEOUT_SECONDS)
        last_fault = max((f.recovered or f.started or 0.0) for f in faults)
        drained = last_end - t0 - last_fault

        lost, wrong, bad_codes = [], [], []
        with tempfile.TemporaryDirectory(prefix="maskq-chaos-results-") as tmp:
            for s in sent:
                expected = EXPECTED_CODE.get(s.case.invalid or "")
                doc = docs.get(s.job_id or "", {})
                if s.job_id and doc.get("state") not in TERMINAL:
                    lost.append(s.job_id)
                    continue
                got = s.refused or (doc.get("error") or {}).get("code")
                if expected:
                    if got != expected:
                        seen = got or doc.get("state")
                        bad_codes.append(f"#{s.case.index} {s.case.invalid}: expected {expected}, got {seen}")
                elif s.refused or doc.get("state") != "succeeded":
                    wrong.append(f"#{s.case.index} {s.case.operation}: {got or doc.get('state')}")
                elif problem := verify_result(client, doc, s.case, Path(tmp)):
                    wrong.append(f"#{s.case.index} {s.case.operation}: {problem}")
        per_job = result_objects(stack)
        succeeded = {i for i, d in docs.items() if d.get("state") == "succeeded"}
        twice = sorted(j for j, n in per_job.items() if n > 1)
        strays = sorted(set(per_job) - succeeded)  # a result for a job that did not succeed
        jobs_made = tenant_job_count(client)
        extra_jobs = jobs_made - len(ids)
        attempts = sum(d.get("attempts", 0) for d in docs.values())
        dead = stack.dead()
        injector.release()  # (the stack stops its components itself)

    report = {
        "seed": args.seed, "jobs": args.jobs, "rate": args.rate, "accepted": len(ids),
        "refused": dict(Counter(s.refused for s in sent if s.refused)),
        "states": dict(Counter(d.get("state") for d in docs.values())),
        "attempts": attempts, "resubmissions": sum(s.tries - 1 for s in sent),
        "lost": lost, "duplicated": twice + strays, "extra_jobs": extra_jobs, "wrong": wrong,
        "invalid_checked": sum(1 for c in cases if c.invalid), "invalid_wrong_code": bad_codes,
        "faults": [asdict(f) for f in faults], "last_submit_s": round(last_submit, 1),
        "last_fault_end_s": round(last_fault, 1), "drained_after_last_fault_s": round(drained, 1),
        "component_dead_at_end": dead.name if dead else None,
    }
    report["ok"] = not (lost or twice or strays or extra_jobs or wrong or bad_codes)
    return report


def print_report(r: dict[str, Any]) -> None:
    print(f"\nseed {r['seed']}: {r['jobs']} jobs sent at {r['rate']}/s, {r['accepted']} accepted, "
          f"refused {r['refused'] or 'none'}; {r['resubmissions']} resubmissions after no answer")
    print(f"states {r['states']}, {r['attempts']} attempts")
    print(f"  lost (never finished):             {len(r['lost'])}")
    print(f"  duplicated (two results, extra):   {len(r['duplicated'])}, extra jobs {r['extra_jobs']}")
    print(f"  wrong (failed or bad result):      {len(r['wrong'])}")
    print(f"  invalid inputs with their code:    {r['invalid_checked'] - len(r['invalid_wrong_code'])}"
          f"/{r['invalid_checked']}")
    for line in (r["lost"] + r["duplicated"] + r["wrong"] + r["invalid_wrong_code"])[:20]:
        print(f"    {line}")
    print(f"last submission at {r['last_submit_s']} s, last fault over at {r['last_fault_end_s']} s; "
          f"backlog drained {r['drained_after_last_fault_s']} s after the last fault (goal <= 60 s: "
          f"{'met' if r['drained_after_last_fault_s'] <= 60 else 'NOT met'})")
    print(f"verdict: {'0 lost, 0 duplicated, 0 wrong' if r['ok'] else 'FAILED'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--rate", type=float, default=2.0, help="jobs sent per second (default 2)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--worker-kills", type=int, default=5)
    p.add_argument("--s3-down", type=float, default=20.0, help="seconds S3 stays down (default 20)")
    p.add_argument("--senders", type=int, default=8, help="client threads submitting (default 8)")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: maskq up's)")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--state-dir", type=Path, help="keep the servers' data and logs here (default: a temporary folder)")
    args = p.parse_args()
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
