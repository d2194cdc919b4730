from __future__ import annotations

import pytest

from maskq import defaults

PETS = defaults.SHARED_DATASETS / "oxford-pets"


@pytest.fixture(scope="session")
def pets():
    if not (PETS / "trainval.txt").exists():
        pytest.skip(f"Oxford-IIIT Pet not found at {PETS} (see ../shared/datasets/README.md)")
    return PETS
