"""Decode untrusted bytes into RGB(+alpha) arrays, and encode results; every failure a typed error.

The format is sniffed from the bytes, never from a file name. Limits are checked on the header,
before any pixel is decoded, so a decompression bomb costs nothing. Pixels keep their colour space
and the ICC profile travels with them to the output; CMYK is the exception: it is converted to
sRGB through its profile because no output format here stores CMYK with alpha.
"""

from __future__ import annotations

import functools
import importlib
import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from maskq import defaults
from maskq.errors import ImageTooLargeError, InvalidImageError, InvalidParameterError, UnsupportedFormatError


@functools.cache
def _optional(module: str) -> Any:
    """fpng (a ~10x faster PNG writer, MIT) and OpenCV (JPEG pixels straight into numpy, twice as
    fast as Pillow's copy-out) when installed; imported on first use, so that the API, which only
    sniffs and checks headers here, never loads them."""
    try:
        return importlib.import_module(module)
    except ImportError:  # the API's slim install has neither; Pillow does the work then
        return None


# Limits are enforced here, per call, from settings; Pillow's global bomb guard would otherwise
# raise its own exception type (or only warn) at a limit of its choosing.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

OutputFormat = Literal["png", "webp", "jpeg"]
# What Pillow may open: the formats users send and browsers show. Others (PSD, ICO, PDF...) are
# refused even though Pillow reads some of them: each reader is attack surface.
# Each, with the extension and content type an input in it is stored under (the one format table).
INPUT_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"), "BMP": ("bmp", "image/bmp"), "TIFF": ("tiff", "image/tiff"),
    "MPO": ("jpg", "image/jpeg"), "AVIF": ("avif", "image/avif"),
}
ACCEPTED_FORMATS = frozenset(INPUT_FORMATS)
ACCEPTED_TEXT = "JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF"  # what error messages tell users to send
CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}  # the output formats
EXTENSION_OF_TYPE = {ctype: ext for ext, ctype in INPUT_FORMATS.values()}


def stored_format(fmt: str) -> tuple[str, str]:
    """``(extension, content type)`` an input of Pillow/sniffed format ``fmt`` is stored under."""
    return INPUT_FORMATS[fmt]
# Magic numbers of image formats, to tell "a broken image" (invalid_image) from "not an image we
# take" (unsupported_format) when Pillow cannot identify the bytes.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"%PDF", 0, "PDF"),
    (b"8BPS", 0, "PSD"),
    (b"<svg", 0, "SVG"),
    (b"<?xml", 0, "XML/SVG"),
)


@dataclass
class DecodedImage:
    """An EXIF-oriented image: 8-bit RGB, the source's alpha if it had one, and its ICC profile."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, or None when the source is opaque
    format: str  # the sniffed source format, e.g. "JPEG"
    mode: str  # the source's Pillow mode before conversion, e.g. "CMYK"
    icc_profile: bytes | None = None
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    @property
    def pixels(self) -> int:
        return self.rgb.shape[0] * self.rgb.shape[1]


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes announce, or None; cheap enough for an API to call per request."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (name != "WEBP" or data[:4] == b"RIFF"):
            return name
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    return None


def _unsupported_name(data: bytes) -> str | None:
    head = data[:64].lstrip()
    for magic, offset, name in _UNSUPPORTED_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def open_image(
    data: bytes, *, max_pixels: int = defaults.MAX_PIXELS, max_bytes: int = defaults.MAX_BYTES
) -> Image.Image:
    """Open and check the header: format, byte and pixel limits. No pixel is decoded yet."""
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"input is {len(data)} bytes, the limit is {max_bytes}", limit_bytes=max_bytes)
    if not data:
        raise InvalidImageError("input is empty (0 bytes)")
    if (canvas := webp_canvas(data)) is not None:
        _check_pixels(*canvas, max_pixels)  # before Pillow's WebP reader allocates that canvas
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        known = sniff_format(data)
        if known:
            raise InvalidImageError(f"corrupt {known} data: the header cannot be read") from None
        other = _unsupported_name(data)
        what = f"{other} is not supported" if other else "the data is not an image in a format maskq reads"
        raise UnsupportedFormatError(f"{what}; send {ACCEPTED_TEXT}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InvalidImageError(f"corrupt image data: {err}") from None
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedFormatError(f"{img.format} is not supported; send {ACCEPTED_TEXT}")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")
    _check_pixels(width, height, max_pixels)
    return img


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} MP, the limit is {max_pixels / 1e6:.1f} MP",
            limit_pixels=max_pixels,
        )


def webp_canvas(data: bytes) -> tuple[int, int] | None:
    """The canvas a WebP file declares in its first chunk (``VP8X``, ``VP8L`` or ``VP8 ``), or None
    for anything else. Read by hand because Pillow opens every WebP with libwebp's animation decoder,
    which allocates two canvases of 4 bytes a pixel when it is created, before Pillow knows the size:
    2 GB of address space for a 70-byte file declaring 16383x16383 (Pillow's own guard does this check
    first, but maskq turns that guard off to apply its own limit)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # 24-bit canvas width - 1 and height - 1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:  # 14-bit width - 1 and height - 1 after the signature
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # a key frame's 14-bit width and height
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _to_rgb_alpha(img: Image.Image) -> tuple[Image.Image, np.ndarray | None, bytes | None]:
    """Bring any mode to 8-bit RGB plus an optional alpha plane; returns the profile to keep."""
    icc = img.info.get("icc_profile") or None
    mode = img.mode
    if mode == "CMYK":
        # CMYK -> sRGB through the embedded profile when there is one; the result is sRGB, so
        # the CMYK profile must not travel on.
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            except (ImageCms.PyCMSError, OSError):
                img = img.convert("RGB")
        else:
            img = img.convert("RGB")
        return img, None, None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.uint32 if mode == "I" else np.uint16).astype(np.float64)
        peak = 65535.0 if mode != "I" or arr.max() > 255 else 255.0
        arr8 = np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB"), None, icc
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr8 = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB"), None, icc
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "1" or mode == "L":
        img = img.convert("RGB")
    elif mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")
    if img.mode == "RGBA":
        arr = np.asarray(img)
        alpha = np.ascontiguousarray(arr[..., 3])
        if alpha.min() == 255:
            alpha = None  # an opaque alpha plane carries nothing
        return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB"), alpha, icc
    return img, None, icc


def decode(
    data: bytes,
    *,
    max_pixels: int = defaults.MAX_PIXELS,
    max_bytes: int = defaults.MAX_BYTES,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode the first frame, EXIF-oriented, as 8-bit RGB (+ alpha).

    ``draft`` asks a JPEG decoder for a smaller size (DCT scaling, up to 8x fewer pixels per side):
    the fast way to a network input when the full-resolution pixels are not needed.
    """
    img = open_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    fmt, mode = img.format or "?", img.mode
    if fmt == "JPEG" and mode == "RGB" and draft is None and _optional("cv2") is not None:
        fast = _decode_jpeg_fast(data, img)
        if fast is not None:
            return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if draft and fmt in ("JPEG", "MPO"):
                img.draft("RGB", draft)
            img.seek(0)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            rgb_img, alpha, icc = _to_rgb_alpha(img)
            rgb = np.asarray(rgb_img, dtype=np.uint8)
    except ImageTooLargeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as err:
        raise InvalidImageError(f"corrupt or truncated {fmt} data: {err}") from None
    except MemoryError:
        raise ImageTooLargeError("image does not fit in memory") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImageError(f"unexpected pixel layout {rgb.shape} from a {mode} image")
    return DecodedImage(rgb=np.ascontiguousarray(rgb), alpha=alpha, format=fmt, mode=mode, icc_profile=icc)


# EXIF orientation -> the numpy view that shows the picture upright (Pillow's exif_transpose table)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _decode_jpeg_fast(data: bytes, header: Image.Image) -> DecodedImage | None:
    """Pixels of a plain YCbCr JPEG via OpenCV; metadata (orientation, ICC) from Pillow's header.

    OpenCV fills a truncated JPEG with grey instead of failing, so only data that ends with the
    end-of-image marker takes this path; anything else goes to Pillow, which names the fault.
    """
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return None
    cv2 = _optional("cv2")
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None or rgb.shape[:2] != (header.height, header.width):
        return None  # OpenCV refused or disagreed (truncated data...): let Pillow decide and explain
    orientation = header.getexif().get(0x0112, 1)
    if orientation in _ORIENT:
        rgb = np.ascontiguousarray(_ORIENT[orientation](rgb))
    icc = header.info.get("icc_profile") or None
    return DecodedImage(rgb=rgb, alpha=None, format="JPEG", mode="RGB", icc_profile=icc)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _with_icc(png: bytes, icc_profile: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (the signature is 8 bytes, IHDR 25)."""
    chunk = _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
    return png[:33] + chunk + png[33:]


def flatten(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite RGB with alpha over a solid colour (for JPEG, which has no alpha)."""
    a = alpha.astype(np.float32)[..., None] * (1.0 / 255.0)
    bg = np.asarray(background, dtype=np.float32)
    out = rgb.astype(np.float32) * a + bg * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def encode(
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    fmt: OutputFormat = "png",
    *,
    icc_profile: bytes | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    jpeg_quality: int = defaults.JPEG_QUALITY,
    webp_quality: int = defaults.WEBP_QUALITY,
    png_compress_level: int = defaults.PNG_COMPRESS_LEVEL,
    png_fast: bool = True,
) -> bytes:
    """Encode RGB (+ alpha) or a single grey plane (``rgb`` of shape HxW) with speed-aware settings."""
    if fmt not in CONTENT_TYPES:
        raise InvalidParameterError(f"format must be one of png, webp, jpeg; got {fmt!r}", field="format")
    fpng = _optional("fpng") if fmt == "png" and png_fast and rgb.ndim == 3 else None
    if fpng is not None:
        pixels = np.ascontiguousarray(rgb if alpha is None else np.dstack([rgb, alpha]))
        png = fpng.from_ndarray(pixels)
        return _with_icc(png, icc_profile) if icc_profile else png
    if rgb.ndim == 2:
        img = Image.fromarray(rgb, "L")
    elif alpha is not None and fmt == "jpeg":
        img = Image.fromarray(flatten(rgb, alpha, background), "RGB")
    elif alpha is not None:
        img = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    else:
        img = Image.fromarray(rgb, "RGB")
    out = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile and img.mode != "L" else {}
    if fmt == "png":
        img.save(out, "PNG", compress_level=png_compress_level, **extra)
    elif fmt == "webp":
        # method 2 of 0-6: a third of the default's time for ~3% bigger files
        img.save(out, "WEBP", quality=webp_quality, method=2, exact=alpha is not None, **extra)
    else:
        img.save(
            out,
            "JPEG",
            quality=jpeg_quality,
            optimize=False,
            subsampling="4:2:0" if jpeg_quality < 95 else "4:4:4",
            **extra,
        )
    return out.getvalue()
