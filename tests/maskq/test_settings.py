from __future__ import annotations

import pytest

from maskq.errors import ConfigurationError
from maskq.settings import load_settings


def test_defaults_are_valid_locally(monkeypatch):
    monkeypatch.delenv("MASKQ_ENV", raising=False)
    s = load_settings()
    assert s.max_pixels == 50_000_000 and s.model == "general" and s.model_path().name == "general.onnx"
    assert s.preload == ["general"] and s.model_path("pets").name == "unet.onnx"


def test_bad_variable_is_named(monkeypatch):
    monkeypatch.setenv("MASKQ_MAX_PIXELS", "lots")
    with pytest.raises(ConfigurationError, match="MASKQ_MAX_PIXELS"):
        load_settings()


def test_out_of_range_is_named(monkeypatch):
    monkeypatch.setenv("MASKQ_JPEG_QUALITY", "101")
    with pytest.raises(ConfigurationError, match="MASKQ_JPEG_QUALITY"):
        load_settings()


def test_production_refuses_insecure_defaults(monkeypatch):
    monkeypatch.setenv("MASKQ_ENV", "production")
    with pytest.raises(ConfigurationError, match="MASKQ_S3_SECRET_KEY.*MASKQ_API_KEYS"):
        load_settings()
    monkeypatch.setenv("MASKQ_S3_SECRET_KEY", "a-real-secret-from-the-vault")
    monkeypatch.setenv("MASKQ_API_KEYS", "short:acme")
    with pytest.raises(ConfigurationError, match="shorter than 16"):
        load_settings()
    monkeypatch.setenv("MASKQ_API_KEYS", "k-0123456789abcdef:acme,k-fedcba9876543210:globex")
    assert load_settings().api_key_map == {"k-0123456789abcdef": "acme", "k-fedcba9876543210": "globex"}


def test_malformed_api_keys(monkeypatch):
    monkeypatch.setenv("MASKQ_API_KEYS", "nocolon")
    with pytest.raises(ConfigurationError, match="MASKQ_API_KEYS"):
        load_settings()


def test_int8_model_path(monkeypatch):
    monkeypatch.setenv("MASKQ_PRECISION", "int8")
    assert load_settings().model_path().name == "general-int8.onnx"
    assert load_settings().model_path("pets").name == "unet-int8.onnx"


def test_model_settings_name_known_models(monkeypatch):
    monkeypatch.setenv("MASKQ_MODEL", "pets")
    monkeypatch.setenv("MASKQ_PRELOAD_MODELS", "pets, general")
    s = load_settings()
    assert s.model == "pets" and s.preload == ["pets", "general"]
    monkeypatch.setenv("MASKQ_MODEL", "cats")
    with pytest.raises(ConfigurationError, match="MASKQ_MODEL"):
        load_settings()
    monkeypatch.setenv("MASKQ_MODEL", "general")
    monkeypatch.setenv("MASKQ_PRELOAD_MODELS", "general,u2net")
    with pytest.raises(ConfigurationError, match="MASKQ_PRELOAD_MODELS.*u2net"):
        load_settings()
