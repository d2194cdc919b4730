"""`maskq up` as a user runs it: a subprocess on free ports, and the process tree it leaves (or not).

The tree is read from /proc (parent pids), so the checks need no extra package and see every
descendant: Redis, weed, the Celery worker and its pool processes, uvicorn.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskq import defaults
from maskq.local.embedded import free_port
from maskq.models import DEFAULT_MODEL, MODELS

REPO = defaults.REPO_ROOT
MODEL = defaults.MODELS_DIR / MODELS[DEFAULT_MODEL].files["fp32"]
needs_stack = pytest.mark.skipif(not MODEL.exists(), reason=f"{MODEL} is missing: train and export the U-Net first")
# Start-up loads the U-Net in each worker process; a loaded 2-core machine needs slack.
UP_TIMEOUT = 180.0


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every process under ``root``: pid -> start time (to tell a reused pid from the same process)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
            starts[int(entry)] = st[2]
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return found


def still_alive(procs: dict[int, int]) -> list[str]:
    """The processes of ``procs`` that still exist (zombies count: nobody reaped them)."""
    alive = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive.append(f"{pid} [{st[1]}] {cmd[:120]}")
    return alive


class Up:
    """``maskq up --port P --state-dir D`` in the background; its stdout and stderr are collected."""

    def __init__(self, state_dir: Path, port: int | None = None, concurrency: int = 1) -> None:
        self.port = port or free_port()
        self.state_dir = state_dir
        self.output = ""
        self.tree: dict[int, int] = {}  # every descendant seen, for the clean-up of a failed test
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maskq.cli", "up", "--port", str(self.port), "--state-dir", str(state_dir),
             "--concurrency", str(concurrency)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        os.set_blocking(self.proc.stdout.fileno(), False)

    def read(self, timeout: float = 0.2) -> str:
        if self.proc.poll() is None:
            self.tree.update(descendants(self.proc.pid))
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout):
            chunk = self.proc.stdout.read()
            if chunk:
                self.output += chunk.decode(errors="replace")
        sel.close()
        return self.output

    def wait_up(self, timeout: float = UP_TIMEOUT) -> Up:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops everything" not in self.read():
            if self.proc.poll() is not None:
                self.read()
                pytest.fail(f"maskq up exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"maskq up not ready after {timeout} s:\n{self.output}")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        return re.search(r"API key: (\S+)", self.output).group(1)

    def server_ports(self) -> list[int]:
        """Redis's and S3's ports, as printed."""
        return [int(p) for p in re.findall(r"(?:redis|s3)\s+\S+?://127\.0\.0\.1:(\d+)", self.output)]

    def finish(self, sig: int | None = signal.SIGINT, timeout: float = 60.0) -> int:
        """Send ``sig`` (None: none, it should exit by itself) and wait for the exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"maskq up did not stop within {timeout} s (signal {sig}):\n{self.output}")
        self.read(0)
        return self.proc.returncode


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    """Start ``maskq up``; whatever a test leaves running is killed at its end (tree and all)."""
    started: list[Up] = []

    def start(**kwargs) -> Up:
        up = Up(tmp_path / f"state{len(started)}", **kwargs)
        started.append(up)
        return up

    yield start
    for up in started:
        up.read(0)
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()
        for line in still_alive(up.tree):  # only what is still the same process (start time checked)
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
