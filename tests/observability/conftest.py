"""Fixtures of the observability tests: real workers (tests/worker's helpers), a real Prometheus
(Debian's ``prometheus``; tests that need it skip with the reason when it is not installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskq import defaults
from maskq.local.embedded import free_port
from tests.worker.conftest import client, start_worker  # noqa: F401 - fixtures re-exported

REPO = defaults.REPO_ROOT
RULES = REPO / "deploy" / "prometheus" / "rules" / "maskq.yml"
RULES_TEST = REPO / "deploy" / "prometheus" / "rules" / "maskq_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "maskq.json"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`: apt-get install -y prometheus)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package `prometheus`: apt-get install -y prometheus)")


def scrape(port: int, timeout: float = 5.0) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels), through prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples(text).items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


class Prometheus:
    """``prometheus`` on 127.0.0.1 with a temp config, TSDB and rules; stopped by the fixture."""

    def __init__(self, workdir: Path, scrape_targets: dict[str, list[str]], rule_files: list[Path] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        jobs = "".join(
            f"  - job_name: {job}\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
            f"    static_configs:\n      - targets: {json.dumps(targets)}\n"
            for job, targets in scrape_targets.items()
        )
        rules = "".join(f"  - {p}\n" for p in rule_files)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + f"scrape_configs:\n{jobs}"
        )

    def start(self, timeout: float = 60.0) -> Prometheus:
        log = open(self.workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
             "--web.enable-lifecycle", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("prometheus not ready")

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            body = urllib.request.urlopen(url, timeout=10).read()
        except urllib.error.HTTPError as err:  # 400 for a bad query: the body says why
            body = err.read()
        return json.loads(body)

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def value(self, expr: str) -> float | None:
        res = self.query(expr)
        assert res["status"] == "success", res
        result = res["data"]["result"]
        if not result:
            return None
        return float(result[0]["value"][1])

    def wait_value(self, expr: str, want: float, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(0.5)
        return got

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator:
    started: list[Prometheus] = []

    def make(targets: dict[str, list[str]], rule_files: list[Path] = ()) -> Prometheus:
        d = tmp_path / f"prom{len(started)}"
        d.mkdir()
        p = Prometheus(d, targets, list(rule_files))
        started.append(p)
        return p.start()

    yield make
    for p in started:
        p.stop()
