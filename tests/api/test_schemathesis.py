"""schemathesis against the live OpenAPI schema: uvicorn on a loopback port, real Redis and S3 behind
it, bounded in examples and time. 0 server errors, 0 schema violations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.conftest import KEY_A

ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis is not installed (pip install schemathesis)")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")
MAX_EXAMPLES = int(os.environ.get("MASKQ_SCHEMATHESIS_EXAMPLES", "12"))
MAX_SECONDS = 60


def test_schemathesis_live_schema(api, tmp_path: Path) -> None:
    argv = [ST, "run", f"{api.url}/openapi.json", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
            "--max-time", str(MAX_SECONDS - 20), "--seed", "7", "--workers", "2", "--no-shrink",
            "--phases", "examples,coverage,fuzzing",
            "--header", f"Authorization: Bearer {KEY_A}", "--request-timeout", "10",
            "--suppress-health-check", "all", "--report", "junit", "--report-dir", str(tmp_path)]
    # cwd: schemathesis and hypothesis keep their databases (.schemathesis/, .hypothesis/) there
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=MAX_SECONDS + 30, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"schemathesis found problems:\n{out[-8000:]}\n--- API log ---\n{api.log()[-3000:]}"
    assert " 500 " not in api.log()
