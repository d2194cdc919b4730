"""The README's first command, end to end: the service comes up, every operation goes through the
HTTP API, the outputs are left, and the service is gone afterwards."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from PIL import Image

from maskq.local.demo import DEMO_JOBS
from tests.e2e.conftest import REPO, descendants, needs_stack, still_alive

pytestmark = pytest.mark.slow


@needs_stack
def test_demo_runs_every_operation_through_the_api_and_leaves_its_outputs(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "maskq.local.demo", "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, int] = {}
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        seen.update(descendants(proc.pid))  # the servers, worker and API it started
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    output = proc.communicate()[0]
    assert proc.returncode == 0, output

    assert {op for _, op, _ in DEMO_JOBS} >= {"mask", "remove", "swap", "blur", "crop", "faceblur"}
    results = sorted(p for p in out.iterdir() if p.name != "contact-sheet.png")
    assert len(results) == len(DEMO_JOBS), output
    for path in results:
        with Image.open(path) as img:
            img.load()
            assert img.width > 10 and img.height > 10
    for _, op, _ in DEMO_JOBS:
        assert any(f"-{op}." in p.name for p in results), op
        assert f" {op} " in output
    assert output.count("succeeded") >= len(DEMO_JOBS)
    assert f"{len(DEMO_JOBS)} of {len(DEMO_JOBS)} jobs succeeded" in output
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.height > len(DEMO_JOBS) * 200  # a row per job

    assert len(seen) >= 4, "the demo should have run the servers, a worker and the API as its children"
    assert still_alive(seen) == [], "the demo left processes running"
