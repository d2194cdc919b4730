"""The CLI as a user runs it: a subprocess on real files, one of them corrupt."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.maskq.conftest import SAMPLES


def maskq(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maskq.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.fixture
def photo_folder(tmp_path: Path, pipeline) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "astronaut.jpg"):
        shutil.copy(SAMPLES / name, folder / name)
    (folder / "broken.jpg").write_bytes((SAMPLES / "chelsea.jpg").read_bytes()[:3000])
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def test_folder_with_one_corrupt_file(photo_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = maskq("remove", str(photo_folder), "-o", str(out), "--crop", "--quiet")
    assert proc.returncode == 1
    # one line per failed input; a summary of results marked for review may follow
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "marked for review" not in line]
    assert len(lines) == 1 and lines[0].startswith(f"{photo_folder / 'broken.jpg'}: invalid_image: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert Image.open(out / "chelsea.png").mode == "RGBA"


def test_single_file_to_file_and_glob(photo_folder: Path, tmp_path: Path):
    target = tmp_path / "cat.webp"
    proc = maskq("blur", str(photo_folder / "chelsea.jpg"), "-o", str(target), "--strength", "70")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(target).format == "WEBP"
    proc = maskq("mask", str(photo_folder / "c*.jpg"), "-o", str(tmp_path / "masks"), "--precision", "fp32", "-j", "2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["chelsea.png", "coffee.png"]


def test_swap_with_logo_on_canvas(photo_folder: Path, tmp_path: Path):
    proc = maskq(
        "swap",
        str(photo_folder / "chelsea.jpg"),
        "-o",
        str(tmp_path / "shop"),
        "--canvas-width",
        "1000",
        "--canvas-height",
        "1000",
        "--scale",
        "0.8",
        "--logo",
        str(SAMPLES / "logo.png"),
        "--background-color",
        "white",
    )
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "shop" / "chelsea.jpg").size == (1000, 1000)


def test_unknown_model_is_an_invalid_parameter(tmp_path: Path):
    proc = maskq("remove", str(SAMPLES / "chelsea.jpg"), "-o", str(tmp_path / "x"), "--model", "u2net")
    assert proc.returncode == 2
    assert proc.stderr.startswith("maskq: invalid_parameter: remove: model: Input should be 'general' or 'pets'")
    assert not (tmp_path / "x").exists()


def test_pets_model_by_name(tmp_path: Path):
    out = tmp_path / "chelsea.png"
    proc = maskq("mask", str(SAMPLES / "chelsea.jpg"), "-o", str(out), "--model", "pets", "--precision", "int8")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == Image.open(SAMPLES / "chelsea.jpg").size


def test_bad_parameter_exits_2_before_any_work(tmp_path: Path):
    proc = maskq("swap", str(SAMPLES / "chelsea.jpg"), "-o", str(tmp_path / "x"), "--background-color", "nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("maskq: invalid_parameter: swap: background_color")
    assert not (tmp_path / "x").exists()


def test_missing_input_is_one_failure(tmp_path: Path, pipeline):
    proc = maskq("mask", str(SAMPLES / "chelsea.jpg"), str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o"), "--quiet")
    assert proc.returncode == 1
    assert f"{tmp_path / 'nope.jpg'}: invalid_parameter: no such file" in proc.stderr
    assert (tmp_path / "o" / "chelsea.png").exists()


def test_missing_model_exits_3(tmp_path: Path):
    import os

    env = {**os.environ, "MASKQ_MODELS_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "maskq.cli", "mask", str(SAMPLES / "chelsea.jpg"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 3 and "model_unavailable" in proc.stderr


def test_report_has_one_row_per_input(photo_folder: Path, tmp_path: Path):
    import json

    out, report = tmp_path / "out", tmp_path / "reports" / "run.json"
    proc = maskq("remove", str(photo_folder), "-o", str(out), "--report", str(report), "--review-below", "1.0",
                 "--quiet")
    assert proc.returncode == 1  # broken.jpg
    doc = json.loads(report.read_text())
    rows = {Path(r["input"]).name: r for r in doc["rows"]}
    assert sorted(rows) == ["astronaut.jpg", "broken.jpg", "chelsea.jpg", "coffee.jpg"]
    assert (doc["images"], doc["failed"], doc["review"]) == (4, 1, 3)
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg"):
        r = rows[name]
        assert Path(r["output"]) == out / name.replace(".jpg", ".png") and Path(r["output"]).exists()
        assert r["model"] == "general" and 0 <= r["confidence"] <= 1 and r["review"] is True and r["error"] is None
        assert {"decode", "infer", "confidence", "encode"} <= set(r["timings"])
    assert rows["broken.jpg"]["error"]["code"] == "invalid_image" and rows["broken.jpg"]["output"] is None
    assert "3 of 4 results marked for review" in proc.stderr


@pytest.mark.parametrize("roi", ["1,2,3", "10%,0,5%,100%", "x,0,10,10"])
def test_bad_roi_exits_2_before_any_work(tmp_path: Path, roi: str):
    proc = maskq("mask", str(SAMPLES / "chelsea.jpg"), "-o", str(tmp_path / "x"), "--roi", roi)
    assert proc.returncode == 2
    assert proc.stderr.startswith("maskq: invalid_parameter: mask: roi: "), proc.stderr
    assert not (tmp_path / "x").exists()


def test_roi_outside_the_image_fails_that_image(tmp_path: Path, pipeline):
    # chelsea.jpg is 451x300: the rectangle is well formed, but holds none of its pixels
    proc = maskq("mask", str(SAMPLES / "chelsea.jpg"), "-o", str(tmp_path / "o"), "--roi", "460,0,500,100")
    assert proc.returncode == 1 and "invalid_parameter: roi: " in proc.stderr, proc.stderr
