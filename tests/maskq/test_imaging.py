"""Decoding untrusted bytes and encoding results, on real photos and modes generated with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from maskq import imaging
from maskq.errors import ImageTooLargeError, InvalidImageError, InvalidParameterError, UnsupportedFormatError
from tests.maskq.conftest import to_bytes


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("RGB", "JPEG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("L", "PNG"),
        ("CMYK", "JPEG"),
        ("1", "PNG"),
        ("RGB", "WEBP"),
        ("RGBA", "WEBP"),
        ("RGB", "BMP"),
        ("RGB", "TIFF"),
        ("RGB", "GIF"),
    ],
)
def test_modes_decode_to_rgb(chelsea, mode, fmt):
    data = to_bytes(chelsea.convert(mode), fmt)
    out = imaging.decode(data)
    assert out.rgb.shape == (chelsea.height, chelsea.width, 3) and out.rgb.dtype == np.uint8
    assert out.format == fmt
    # every mode keeps the picture: compare with the RGB original, loosely (lossy formats, 1-bit, grey)
    ref = np.asarray(chelsea.convert(mode).convert("RGB"), np.float32)
    assert np.abs(out.rgb.astype(np.float32) - ref).mean() < (12 if fmt in ("JPEG", "WEBP", "GIF") else 1)


def test_rgba_keeps_alpha_and_opaque_alpha_is_dropped(chelsea):
    rgba = chelsea.convert("RGBA")
    a = np.full((chelsea.height, chelsea.width), 255, np.uint8)
    a[:50] = 0
    rgba.putalpha(Image.fromarray(a))
    out = imaging.decode(to_bytes(rgba, "PNG"))
    assert out.alpha is not None and (out.alpha[:50] == 0).all() and (out.alpha[50:] == 255).all()
    assert imaging.decode(to_bytes(chelsea.convert("RGBA"), "PNG")).alpha is None


def test_palette_with_transparency(chelsea):
    p = chelsea.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    idx = np.asarray(p)[0, 0]
    out = imaging.decode(to_bytes(p, "PNG", transparency=int(idx)))
    assert out.alpha is not None and out.alpha[0, 0] == 0


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 256, dtype=np.float64)[None, :].repeat(8, 0)).astype(np.uint16)
    img = Image.fromarray(ramp).convert("I;16") if Image.fromarray(ramp).mode != "I;16" else Image.fromarray(ramp)
    out = imaging.decode(to_bytes(img, "PNG"))
    assert out.mode.startswith("I")
    assert out.rgb[0, 0, 0] == 0 and out.rgb[0, -1, 0] == 255 and 120 < out.rgb[0, 128, 0] < 135


def test_exif_orientation_is_applied(chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = to_bytes(chelsea, "JPEG", exif=exif.tobytes())
    out = imaging.decode(data)
    assert out.rgb.shape[:2] == (chelsea.width, chelsea.height)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation):
    # an asymmetric picture, so that each of the 8 transforms gives a different array
    base = Image.fromarray(np.arange(24 * 40 * 3, dtype=np.uint32).reshape(24, 40, 3).astype(np.uint8) * 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = to_bytes(base, "JPEG", quality=100, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"), np.int16)
    got = imaging.decode(data).rgb.astype(np.int16)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 2  # two JPEG decoders, same upright picture


def test_animated_takes_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    out = imaging.decode(buf.getvalue())
    assert tuple(out.rgb[10, 10]) == (255, 0, 0)


def test_cmyk_with_profile_becomes_srgb_and_drops_cmyk_profile(chelsea):
    # a CMYK image carrying an (sRGB-derived) ICC profile must not pass that profile on to RGB pixels
    cmyk = chelsea.convert("CMYK")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = imaging.decode(to_bytes(cmyk, "JPEG", icc_profile=srgb))
    assert out.icc_profile is None and out.rgb.shape[2] == 3


def test_icc_profile_survives_to_output(chelsea):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = imaging.decode(to_bytes(chelsea, "JPEG", icc_profile=icc))
    assert out.icc_profile == icc
    for fmt in ("png", "jpeg", "webp"):
        encoded = imaging.encode(out.rgb, None, fmt, icc_profile=out.icc_profile)
        assert Image.open(io.BytesIO(encoded)).info.get("icc_profile") == icc


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", InvalidImageError),
        (b"just some text, not an image\n" * 10, UnsupportedFormatError),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", UnsupportedFormatError),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", UnsupportedFormatError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, InvalidImageError),
        (b"\xff\xd8\xff\xe0" + b"\x13" * 200, InvalidImageError),
    ],
    ids=["empty", "text", "pdf", "heic", "png-garbage", "jpeg-garbage"],
)
def test_bad_bytes_get_typed_errors(data, error):
    with pytest.raises(error) as info:
        imaging.decode(data)
    assert info.value.code in {"invalid_image", "unsupported_format"} and info.value.message


def test_truncated_jpeg_is_invalid(chelsea):
    data = to_bytes(chelsea, "JPEG")
    with pytest.raises(InvalidImageError, match="truncated"):
        imaging.decode(data[: len(data) // 2])


def test_unaccepted_format_pillow_could_read_is_refused(chelsea):
    with pytest.raises(UnsupportedFormatError, match="ICO"):
        imaging.decode(to_bytes(chelsea.resize((64, 64)), "ICO"))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: what a decompression bomb looks like to a reader."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_pixel_limit_checked_before_decoding():
    with pytest.raises(ImageTooLargeError) as info:
        imaging.decode(png_header_only(100_000, 100_000))
    assert info.value.code == "image_too_large" and info.value.details["limit_pixels"] == 50_000_000


def test_pixel_limit_is_a_setting(chelsea):
    with pytest.raises(ImageTooLargeError):
        imaging.decode(to_bytes(chelsea, "PNG"), max_pixels=chelsea.width * chelsea.height - 1)


def test_byte_limit(chelsea):
    data = to_bytes(chelsea, "PNG")
    with pytest.raises(ImageTooLargeError):
        imaging.decode(data, max_bytes=len(data) - 1)


def test_jpeg_flattens_alpha_on_background():
    rgb = np.zeros((4, 4, 3), np.uint8)
    alpha = np.zeros((4, 4), np.uint8)
    out = Image.open(io.BytesIO(imaging.encode(rgb, alpha, "jpeg", background=(255, 255, 255))))
    assert out.mode == "RGB" and np.asarray(out).min() >= 250


def test_png_and_webp_keep_alpha(chelsea):
    rgb = np.asarray(chelsea)
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 255
    for fmt in ("png", "webp"):
        img = Image.open(io.BytesIO(imaging.encode(rgb, alpha, fmt)))
        assert img.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(img)[..., 3], alpha)


def test_unknown_output_format():
    with pytest.raises(InvalidParameterError):
        imaging.encode(np.zeros((2, 2, 3), np.uint8), None, "gif")  # type: ignore[arg-type]


def test_sniff_format(sample_bytes):
    assert imaging.sniff_format(sample_bytes["chelsea"]) == "JPEG"
    assert imaging.sniff_format(sample_bytes["logo"]) == "PNG"
    assert imaging.sniff_format(b"hello") is None
