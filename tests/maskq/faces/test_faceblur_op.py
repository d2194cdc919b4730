"""``faceblur`` through the core: the pipeline (decode, operation, encode) and the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from maskq import defaults
from maskq.cli import main
from maskq.errors import InvalidImageError, InvalidParameterError
from maskq.ops import OPERATIONS
from maskq.pipeline import Pipeline
from maskq.settings import load_settings

ASTRONAUT = defaults.REPO_ROOT / "samples" / "astronaut.jpg"
ROCKET = defaults.REPO_ROOT / "tests" / "data" / "rocket.jpg"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    # no U-Net needed: faceblur does not ask for a matte, so the segmenter is never loaded
    return Pipeline(load_settings())


def test_faceblur_needs_a_matte_only_with_a_background() -> None:
    from maskq.params import parse_params

    assert "faceblur" in OPERATIONS
    assert not parse_params("faceblur", {}).needs_matte()
    assert parse_params("faceblur", {"background": "remove"}).needs_matte()
    swap = parse_params("faceblur", {"background": "swap", "background_params": {"logo": "logo.png"}})
    assert swap.asset_refs() == {"background_params.logo": "logo.png"}


def test_faceblur_combined_with_background_removal() -> None:
    """Faces anonymised, then the background removed from the anonymised photo: one job, both."""
    if not (defaults.MODELS_DIR / "unet.onnx").exists():
        pytest.skip("models/unet.onnx is missing")
    pipeline = Pipeline.load(load_settings())
    data = ASTRONAUT.read_bytes()
    params = {"mode": "solid", "color": "#00ff00", "background": "remove", "background_params": {"crop": False}}
    out = np.asarray(Image.open(io.BytesIO(pipeline.process(data, "faceblur", params).data)))
    assert out.shape == (512, 512, 4)  # RGBA: the background operation ran
    assert (out[..., 3] < 128).any() and (out[..., 3] > 128).any()
    green = (out[..., 0] < 40) & (out[..., 1] > 215) & (out[..., 2] < 40)
    assert green[80:170, 180:270].mean() > 0.3  # the face (x 177, y 66, 95x95) is painted over


def test_pipeline_blurs_the_face_and_keeps_size_and_alpha(pipeline: Pipeline) -> None:
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, "PNG")
    result = pipeline.process(buf.getvalue(), "faceblur", {"mode": "solid", "color": "#00ff00"})
    out = np.asarray(Image.open(io.BytesIO(result.data)))
    assert result.content_type == "image/png" and out.shape == (512, 512, 4)
    np.testing.assert_array_equal(out[..., 3], alpha)
    assert (out[120, 224, :3] == (0, 255, 0)).all()  # the middle of the face
    np.testing.assert_array_equal(out[400:, :, :3], rgb[400:])  # the suit is untouched


def test_pipeline_reports_the_cores_errors(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidImageError):
        pipeline.process(b"\xff\xd8\xff\xe0 this is not really a jpeg", "faceblur", {})
    with pytest.raises(InvalidParameterError) as info:
        pipeline.process(ASTRONAUT.read_bytes(), "faceblur", {"mode": "swirl"})
    assert info.value.field == "mode"


def test_cli_faces_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["faces", str(ASTRONAUT), str(ROCKET), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found[str(ROCKET)] == []
    ((x, y, w, h, score),) = found[str(ASTRONAUT)]
    assert 160 < x < 195 and 40 < y < 80 and 80 < w < 115 and 95 < h < 140 and score > 0.5


def test_cli_faces_reports_a_bad_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert main(["faces", str(bad), str(ASTRONAUT), "--json"]) == 1
    captured = capsys.readouterr()
    assert list(json.loads(captured.out)) == [str(ASTRONAUT)]
    assert f"{bad}: " in captured.err


@pytest.mark.skipif(
    not (defaults.MODELS_DIR / "unet.onnx").exists(), reason="the CLI's Pipeline.load loads the U-Net too"
)
def test_cli_faceblur_writes_a_blurred_jpeg(tmp_path) -> None:
    target = tmp_path / "out.jpg"
    assert main(["faceblur", str(ASTRONAUT), "-o", str(target), "--quiet"]) == 0
    out = np.asarray(Image.open(target).convert("RGB")).astype(np.float32)
    src = np.asarray(Image.open(ASTRONAUT).convert("RGB")).astype(np.float32)
    assert out.shape == src.shape
    assert np.abs(out[90:150, 200:250] - src[90:150, 200:250]).mean() > 8  # eyes and nose
    assert np.abs(out[400:] - src[400:]).mean() < 2  # only JPEG re-encoding away from the face
