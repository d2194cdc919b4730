"""``maskq up``: the whole service on this machine, in the foreground, until Ctrl-C.

Starts, as child processes it owns, Redis (with an append-only file: a restart keeps the queue and
the records) and an S3 server (:mod:`maskq.local.embedded`, the same code
the tests use), a Celery worker (``cpu`` and ``webhooks`` queues) and the API (uvicorn), all bound
to 127.0.0.1; waits until each answers; prints the web page's URL first (``/ui``, served by the API),
then the API's, a key and a curl example. Ctrl-C or SIGTERM stops them in reverse order (the worker
finishes its running jobs for a few seconds, then its whole process group is killed); each child
leads its own process group and has ``PR_SET_PDEATHSIG``, so nothing outlives ``maskq up`` even when
it is killed itself.

    maskq up                      # API on http://127.0.0.1:8000, data under .state/
    maskq up --port 8080 --concurrency 1

The other ``MASKQ_*`` variables reach the worker and the API as they are, except the Redis URL and
the S3 endpoint, which point at the servers started here (S3 credentials: ``MASKQ_S3_ACCESS_KEY`` /
``MASKQ_S3_SECRET_KEY``, the local pair by default).

API keys: ``MASKQ_API_KEYS`` ("key:tenant,...") when set; otherwise a local key, made once and kept
in ``STATE_DIR/api-key``. Exit status: 0 stopped by Ctrl-C/SIGTERM, 1 a component died,
3 a port is taken or a component could not start (the message names it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from maskq import defaults
from maskq.errors import EXIT_FAILED, EXIT_OK, EXIT_SETUP, ConfigurationError, MaskqError
from maskq.local.embedded import (
    LOOPBACK,
    STOP_GRACE_SECONDS,
    RedisServer,
    S3Server,
    ServerProcess,
    free_port,
    port_is_free,
)

COMMAND = "up"
API_PORT = 8000
STATE_DIR = Path(".state")
LOCAL_TENANT = "local"
# The worker loads the U-Net in every pool process: a few seconds idle, much more on a loaded machine.
START_TIMEOUT_SECONDS = 180.0
# Warm shutdown: running jobs get this long to finish before the worker's process group is killed.
WORKER_STOP_GRACE_SECONDS = 10.0


class PortInUseError(ConfigurationError):
    """A port `maskq up` must listen on is taken by another process."""


class _Stop(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C does."""


class _GroupProcess(ServerProcess):
    """A Python child (worker, API) in a process group of its own: its stop also kills whatever is
    left of the group (pool processes)."""

    new_session = True

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        super().__init__(workdir)
        self.env = env
        self._log_offset = 0

    def environ(self) -> dict[str, str]:
        return self.env

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> ServerProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        return super().start(timeout)

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        proc = self.proc
        super().stop(grace)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group is the child's own (start_new_session)


class WorkerProcess(_GroupProcess):
    """``celery -A worker.app worker`` on the CPU and webhook queues, prefork pool."""

    name = "worker"

    def __init__(self, env: dict[str, str], workdir: Path, concurrency: int, queues: str) -> None:
        super().__init__(env, workdir)
        self.concurrency = concurrency
        self.queues = queues

    def ports(self) -> list[int]:
        return []

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", self.queues,
                "-c", str(self.concurrency), "-P", "prefork", "-n", f"maskq-up-{os.getpid()}@{LOOPBACK}",
                "--loglevel=INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"]

    def ready(self) -> bool:
        # consuming, and every pool process has loaded the model (worker/runtime.py logs it)
        text = self.log_since_start()
        return " ready." in text and text.count("model loaded") >= self.concurrency

    def stop(self, grace: float = WORKER_STOP_GRACE_SECONDS) -> None:
        super().stop(grace)


class ApiProcess(_GroupProcess):
    """``uvicorn api.main:app`` on 127.0.0.1; ready when ``/readyz`` answers 200."""

    name = "api"

    def __init__(self, env: dict[str, str], workdir: Path, port: int) -> None:
        super().__init__(env, workdir)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ports(self) -> list[int]:
        return [self.port]

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "api.main:app", "--host", LOOPBACK, "--port", str(self.port),
                "--timeout-graceful-shutdown", "5"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False


def local_api_key(state_dir: Path) -> str:
    """The key kept in ``state_dir/api-key``, made on first use (so a restart keeps it)."""
    path = state_dir / "api-key"
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    key = "mq_local_" + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


class Stack:
    """Redis, S3, a worker and the API, started in that order and stopped in reverse.

    ``api_port=0`` (or ``redis_port``/``s3_port`` 0, their default) takes a free port. Usable as a
    context manager; :meth:`dead` tells whether a component has exited since.
    """

    def __init__(self, state_dir: Path = STATE_DIR, api_port: int = API_PORT, *, redis_port: int = 0,
                 s3_port: int = 0, concurrency: int | None = None, log=None) -> None:
        from maskq.settings import available_cpus, load_settings

        self.state_dir = Path(state_dir).resolve()
        self.api_port = api_port or free_port()
        self.redis_port = redis_port
        self.s3_port = s3_port
        self.concurrency = concurrency or max(1, min(2, available_cpus()))
        self.settings = load_settings()  # a bad MASKQ_* variable stops us here, named
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.api_keys = self.settings.api_keys
        self.components: list[ServerProcess] = []
        self.redis: RedisServer | None = None
        self.s3: S3Server | None = None
        self.worker: WorkerProcess | None = None
        self.api: ApiProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def page_url(self) -> str:
        """The web page the API serves (api/ui): what a person opens first."""
        return f"{self.url}/ui"

    @property
    def api_key(self) -> str:
        """The first key of ``MASKQ_API_KEYS`` or the local one ("" before start() made it)."""
        return next(iter(self.settings.model_copy(update={"api_keys": self.api_keys}).api_key_map), "")

    def _check_ports(self) -> None:
        for what, port in (("API", self.api_port), ("Redis", self.redis_port), ("S3", self.s3_port)):
            if port and not port_is_free(port):
                hint = " (use --port)" if what == "API" else ""
                raise PortInUseError(f"port {port} on {LOOPBACK} is already in use, {what} cannot listen there{hint}")

    def child_env(self) -> dict[str, str]:
        assert self.redis is not None and self.s3 is not None
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(defaults.REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "MASKQ_REDIS_URL": self.redis.url,
            "MASKQ_S3_ENDPOINT": self.s3.endpoint,
            "MASKQ_S3_ACCESS_KEY": self.s3.access_key,
            "MASKQ_S3_SECRET_KEY": self.s3.secret_key,
            "MASKQ_S3_SECURE": "false",
            "MASKQ_API_KEYS": self.api_keys,
        }

    @staticmethod
    def _check_installed() -> None:
        """The worker's and the API's packages, before anything starts (a clear message, no traceback)."""
        import importlib.util

        missing = [m for m in ("celery", "uvicorn", "fastapi") if importlib.util.find_spec(m) is None]
        missing += [f for f in ("worker/app.py", "api/main.py") if not (defaults.REPO_ROOT / f).is_file()]
        if missing:
            raise ConfigurationError(f"cannot run the service, missing: {', '.join(missing)} "
                                     "(install with: pip install -e '.[worker,api]')")

    def start(self) -> Stack:
        self._check_ports()
        self._check_installed()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.api_keys:
            self.api_keys = f"{local_api_key(self.state_dir)}:{LOCAL_TENANT}"
        try:
            self.redis = RedisServer(port=self.redis_port or None, workdir=self.state_dir / "redis", persistent=True)
            self._start(self.redis, f"redis  {self.redis.url}  ({Path(self.redis.binary).name}, append-only file)")
            self.s3 = S3Server(self.settings.s3_access_key, self.settings.s3_secret_key, port=self.s3_port or None,
                               workdir=self.state_dir / "s3")
            self._start(self.s3, f"s3     http://{self.s3.endpoint}  (data in {self.s3.workdir / 'data'})")
            env = self.child_env()
            queues = f"{self.settings.worker_queue},{defaults.QUEUE_WEBHOOKS}"
            self.worker = WorkerProcess(env, self.state_dir / "worker", self.concurrency, queues)
            self._start(self.worker, f"worker {self.concurrency} process(es), queues {queues}")
            self.api = ApiProcess(env, self.state_dir / "api", self.api_port)
            self._start(self.api, f"api    {self.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, component: ServerProcess, label: str) -> None:
        component.new_session = True  # Ctrl-C in the terminal reaches us only; we stop them in order
        self.components.append(component)
        t0 = time.monotonic()
        try:
            component.start(START_TIMEOUT_SECONDS)
        except ConfigurationError as err:
            if "already in use" in err.message:
                raise PortInUseError(err.message) from None
            raise ConfigurationError(f"{component.name} did not start: {err.message}\n"
                                     f"  (log: {component.log_path})") from None
        self.log(f"  {label}  ready in {time.monotonic() - t0:.1f} s")

    def dead(self) -> ServerProcess | None:
        """The first component that has exited on its own, if any."""
        return next((c for c in self.components if c.proc is not None and c.proc.poll() is not None), None)

    def stop(self) -> None:
        """API, worker, S3, Redis: each SIGTERM, then SIGKILL (of its process group) after a grace."""
        while self.components:
            component = self.components.pop()
            t0 = time.monotonic()
            try:
                component.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                self.log(f"  {component.name}: {exc}")
            else:
                self.log(f"  {component.name} stopped in {time.monotonic() - t0:.1f} s")

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def curl_example(url: str, key: str) -> str:
    sample = defaults.REPO_ROOT / "samples" / "chelsea.jpg"
    return (f"curl -s -H 'Authorization: Bearer {key}' -F image=@{shlex.quote(str(sample))} -F operation=remove "
            f"{url}/v1/jobs\n  curl -s -H 'Authorization: Bearer {key}' {url}/v1/jobs/JOB_ID")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(COMMAND, help="run the whole service here (Redis, S3, worker, API) until Ctrl-C",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=API_PORT,
                   help=f"API port on {LOOPBACK} (default: {API_PORT}; 0: any free)")
    p.add_argument("--state-dir", type=Path, default=STATE_DIR,
                   help=f"S3 data, logs and the local key (default: {STATE_DIR}/)")
    p.add_argument("--concurrency", type=int, default=0, help="worker processes (default: min(2, cores))")
    p.add_argument("--redis-port", type=int, default=0, help="Redis port (default: any free)")
    p.add_argument("--s3-port", type=int, default=0, help="S3 port (default: any free)")
    return p


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    # Ctrl-C raises KeyboardInterrupt even when we were started with SIGINT ignored (a shell's `&`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    stack: Stack | None = None
    code = EXIT_OK
    try:
        stack = Stack(args.state_dir, args.port, redis_port=args.redis_port, s3_port=args.s3_port,
                      concurrency=args.concurrency or None)
        print(f"maskq up: starting (state in {stack.state_dir})", file=sys.stderr, flush=True)
        stack.start()
        print(f"\nmaskq is up: {stack.page_url}  (open it, paste the key, drop photos)\n"
              f"  API:     {stack.url}  (reference: {stack.url}/docs)\n  API key: {stack.api_key}\n  try:\n  "
              f"{curl_example(stack.url, stack.api_key)}\n  logs: {stack.state_dir}/*/*.log\n"
              "Ctrl-C stops everything.", flush=True)
        while (gone := stack.dead()) is None:
            time.sleep(0.5)
        print(f"maskq up: {gone.name} exited with {gone.proc.returncode}; stopping. Its log:\n{gone.log_tail()}",
              file=sys.stderr)
        code = EXIT_FAILED
    except PortInUseError as err:
        print(f"maskq up: {err.message}", file=sys.stderr)
        code = EXIT_SETUP
    except MaskqError as err:
        print(f"maskq up: {err.code}: {err.message}", file=sys.stderr)
        code = EXIT_SETUP
    except (KeyboardInterrupt, _Stop):
        code = EXIT_OK
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if stack is not None and stack.components:
            print("\nmaskq up: stopping ...", file=sys.stderr, flush=True)
            stack.stop()
            print("maskq up: stopped", file=sys.stderr, flush=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maskq")
    add_parser(parser.add_subparsers(dest="operation", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(argv=[COMMAND, *sys.argv[1:]]))
