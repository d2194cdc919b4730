"""The model registry: names, files, output contracts (pure logic, no model runs)."""

from __future__ import annotations

import numpy as np
import pytest

from maskq import defaults
from maskq.errors import InvalidParameterError, ModelUnavailableError
from maskq.models import DEFAULT_MODEL, MODELS, get_model, spec_for_file
from maskq.params import matte_model, parse_params, with_default_model


def test_general_is_the_default_and_pets_stays():
    assert DEFAULT_MODEL == "general" and set(MODELS) == {"general", "pets"}
    assert MODELS["pets"].files == {"fp32": "unet.onnx", "int8": "unet-int8.onnx"}


def test_every_shipped_file_and_card_exists():
    for spec in MODELS.values():
        assert (defaults.MODELS_DIR / spec.card).is_file(), spec.card
        for file in spec.files.values():
            assert (defaults.MODELS_DIR / file).is_file(), file


def test_unknown_model_is_an_invalid_parameter():
    with pytest.raises(InvalidParameterError) as err:
        get_model("u2net")
    assert err.value.code == "invalid_parameter" and err.value.field == "model"
    with pytest.raises(InvalidParameterError, match="model"):
        parse_params("remove", {"model": "u2net"})


def test_trimap_foreground_counts_the_border_band():
    raw = np.zeros((1, 2, 2, 3), np.float32)
    raw[..., 2] = 1.0  # all border
    assert np.allclose(MODELS["pets"].foreground(raw), 1.0)
    raw[..., 2], raw[..., 1] = 0.3, 0.7
    assert np.allclose(MODELS["pets"].foreground(raw), 0.3)
    assert not MODELS["pets"].hard_foreground(raw[0]).any()


def test_alpha_foreground_is_the_alpha():
    raw = np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 2, 4, 1)
    fg = MODELS["general"].foreground(raw)
    assert fg.shape == (1, 2, 4) and np.allclose(fg, raw[..., 0])
    assert MODELS["general"].hard_foreground(raw[0]).sum() == 4


def test_spec_by_file_name():
    assert spec_for_file("models/general-int8.onnx").name == "general"
    assert spec_for_file("/x/unet.onnx").name == "pets"
    with pytest.raises(ModelUnavailableError):
        spec_for_file("u2netp.onnx")


def test_jobs_name_their_model():
    assert with_default_model("remove", {}, "general") == {"model": "general"}
    assert with_default_model("remove", {"model": "pets"}, "general") == {"model": "pets"}
    assert with_default_model("faceblur", {}, "general") == {}  # face blur alone uses no matte
    fb = with_default_model("faceblur", {"background": "blur"}, "pets")
    assert fb["background_params"] == {"model": "pets"}
    assert matte_model(parse_params("faceblur", fb)) == "pets"
    assert matte_model(parse_params("swap", {"model": "general"})) == "general"
    assert matte_model(parse_params("faceblur", {})) is None


def test_public_description_lists_sizes_and_precisions():
    doc = MODELS["general"].public()
    assert doc["name"] == "general" and doc["precisions"] == ["fp32", "int8"] and doc["output"] == "alpha1"
    assert doc["card"].startswith("models/") and "DUTS-TR" in doc["trained_on"]
