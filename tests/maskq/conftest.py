"""Real images and the real model for the core's tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskq import defaults

SAMPLES = defaults.REPO_ROOT / "samples"
PETS = defaults.SHARED_DATASETS / "oxford-pets"


@pytest.fixture(scope="session")
def sample_bytes() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in SAMPLES.glob("*") if p.suffix in (".jpg", ".png")}


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    return Image.open(SAMPLES / "chelsea.jpg").convert("RGB")


def to_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def pipeline():
    if not (defaults.MODELS_DIR / "general.onnx").exists():
        pytest.skip("models/general.onnx is missing: train and export it (training/train_general.py, export.py)")
    from maskq.pipeline import Pipeline
    from maskq.settings import load_settings

    return Pipeline.load(load_settings())


@pytest.fixture(scope="session")
def pet_fullres() -> list[tuple[Path, Path]]:
    """A few Oxford-IIIT Pet test photos at original resolution with their trimaps (../shared)."""
    folder = PETS / "test-fullres"
    if not folder.exists():
        pytest.skip(f"Oxford-IIIT Pet not found at {PETS} (see ../shared/datasets/README.md)")
    names = sorted(p.stem for p in (folder / "images").glob("*.jpg"))[::30][:10]
    return [(folder / "images" / f"{n}.jpg", folder / "trimaps" / f"{n}.png") for n in names]


def rng_image(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
