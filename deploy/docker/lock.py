#!/usr/bin/env python3
"""Write the pinned requirement file of each image from pyproject's extras.

    python deploy/docker/lock.py            # rewrite deploy/docker/requirements-*.txt
    python deploy/docker/lock.py --check    # exit 1 if a lock no longer matches pyproject

Each image installs its lock first (a cached layer that changes only when the lock does), then the
project itself with ``--no-deps``. The lock is what ``pip install --dry-run`` resolves for the
image's extra on CPython 3.11, Linux x86_64 (the images' interpreter and platform), so a build
installs exactly what was checked here. Run it after changing a dependency in pyproject.toml;
tests/deploy/test_manifests.py fails while a lock is out of date.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DOCKER_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCKER_DIR.parents[1]

# image name -> the pyproject extra it installs. The GPU image takes onnxruntime-gpu *instead of*
# onnxruntime: the two wheels install the same `onnxruntime` module and must never be mixed.
IMAGES = {"api": "api", "worker-cpu": "worker", "worker-gpu": "gpu"}
# what an image must not contain, and why
FORBIDDEN = {
    "api": {"onnxruntime": "the API never imports ONNX Runtime", "onnxruntime-gpu": "idem"},
    "worker-cpu": {"onnxruntime-gpu": "the CPU image takes the CPU wheel", "fastapi": "workers never import FastAPI"},
    "worker-gpu": {"onnxruntime": "onnxruntime-gpu replaces it", "fastapi": "workers never import FastAPI"},
}
PROJECT = "maskq"


def lock_path(image: str) -> Path:
    return DOCKER_DIR / f"requirements-{image}.txt"


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def requirements(extra: str) -> list[str]:
    """The requirements of `maskq[extra]` read from pyproject.toml, self-references (`maskq[cpu,queue]`)
    expanded: resolving this list is what `pip install .[extra]` resolves, without building the
    project first (which costs a build environment and most of the time)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen:
            return
        if name not in extras:
            raise KeyError(f"pyproject.toml has no extra [{name}]")
        seen.add(name)
        for req in extras[name]:
            m = re.fullmatch(rf"\s*{PROJECT}\s*\[([^\]]+)\]\s*", req)
            if m:
                for sub in m.group(1).split(","):
                    add(sub.strip())
            else:
                out.append(req)

    add(extra)
    return sorted(set(out))


def resolve(extra: str, constraints: Path | None = None, pip: str = sys.executable) -> dict[str, str]:
    """{name: version} that pip would install for `.[extra]` into an empty environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("\n".join(requirements(extra)) + "\n")
        cmd = [
            pip,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            "-r",
            str(reqs),
        ]
        if constraints is not None:
            cmd[4:4] = ["-c", str(constraints)]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not resolve .[{extra}]:\n{proc.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return {
        canonical(i["metadata"]["name"]): i["metadata"]["version"]
        for i in data["install"]
        if canonical(i["metadata"]["name"]) != PROJECT
    }


def read_lock(image: str) -> dict[str, str]:
    pins = {}
    for line in lock_path(image).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def write_lock(image: str, pins: dict[str, str]) -> None:
    body = "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))
    lock_path(image).write_text(
        f"# {image}: pinned by deploy/docker/lock.py from pyproject extra [{IMAGES[image]}]. Do not edit by hand.\n"
        + body
    )


def check_lock(image: str, pip: str = sys.executable) -> list[str]:
    """Problems with one lock: pip resolves the extra *constrained by the lock*, so the answer does
    not drift when PyPI publishes new releases. A package pyproject now needs but the lock lacks, a
    pin pyproject now refuses, a pin nothing needs any more, or a forbidden package is a problem."""
    fix = "; run python deploy/docker/lock.py"
    pins = read_lock(image)
    try:
        got = resolve(IMAGES[image], constraints=lock_path(image), pip=pip)
    except RuntimeError as err:
        return [f"{lock_path(image).name} conflicts with pyproject.toml{fix}\n{err}"]
    msgs = []
    missing = sorted(set(got) - set(pins))
    if missing:
        msgs.append(f"{lock_path(image).name} lacks {missing}{fix}")
    stale = sorted(set(pins) - set(got))
    if stale:
        msgs.append(f"{lock_path(image).name} pins packages nothing needs: {stale}{fix}")
    bad = sorted(set(got) & set(FORBIDDEN[image]))
    if bad:
        msgs.append(f"must not contain {bad}: " + "; ".join(FORBIDDEN[image][b] for b in bad))
    return msgs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    status = 0
    with ThreadPoolExecutor(len(IMAGES)) as pool:
        if args.check:
            problems = dict(zip(IMAGES, pool.map(check_lock, IMAGES), strict=True))
            for image, msgs in problems.items():
                for msg in msgs:
                    print(f"{image}: {msg}", file=sys.stderr)
                    status = 1
            if not status:
                print("every lock is complete and consistent with pyproject.toml")
            return status
        resolved = dict(zip(IMAGES, pool.map(resolve, IMAGES.values()), strict=True))
    for image, pins in resolved.items():
        bad = sorted(set(pins) & set(FORBIDDEN[image]))
        if bad:
            print(f"{image}: must not contain {bad}", file=sys.stderr)
            status = 1
        else:
            write_lock(image, pins)
            print(f"{image}: {len(pins)} packages -> {lock_path(image).relative_to(REPO_ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
