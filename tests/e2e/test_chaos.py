"""The chaos run at a small N, as CI runs it: `python bench/chaos.py` as a user runs it, its report
read back. Every fault kind happens once or twice (a pool child and a whole worker SIGKILLed, Redis
SIGKILLed and started again from its append-only file, S3 down, the API SIGKILLed), and nothing may
be lost, done twice or wrong; every invalid input gets its code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO, needs_stack

pytestmark = [needs_stack, pytest.mark.slow]


def test_a_small_chaos_run_loses_nothing_duplicates_nothing_and_gets_nothing_wrong(tmp_path):
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--jobs", "40", "--rate", "2", "--seed", "3", "--worker-kills", "2",
         "--s3-down", "8", "--json", str(out), "--state-dir", str(tmp_path / "state")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    tail = "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("{"))[-4000:]
    assert out.exists(), f"no report (exit {proc.returncode}):\n{tail}\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert [f["note"] for f in report["faults"] if "failed" in f["note"]] == [], tail
    assert report["lost"] == [] and report["duplicated"] == [] and report["extra_jobs"] == 0, tail
    assert report["wrong"] == [] and report["invalid_wrong_code"] == [], tail
    # refused at the door: only invalid inputs (a valid one refused counts as wrong above)
    assert report["invalid_checked"] == 4 and report["accepted"] + sum(report["refused"].values()) == 40, tail
    # the faults really interrupted work: some jobs were attempted more than once
    assert report["attempts"] > sum(report["states"].values()), tail
    assert report["component_dead_at_end"] is None and proc.returncode == 0, tail
