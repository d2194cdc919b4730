"""The operations: pure functions of (image, matte, params) -> pixels, and the registry naming them.

Whether an operation needs the U-Net's matte, and which images its parameters name, is the
catalogue's to say (:mod:`maskq.params`, importable without OpenCV); this registry holds the
functions that make the pixels. Another module adds an operation with ``register``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskq.errors import InvalidParameterError
from maskq.imaging import DecodedImage
from maskq.matting import alpha_to_uint8
from maskq.ops import compose
from maskq.ops.blur import blur_background
from maskq.ops.geometry import Box, crop_box
from maskq.params import (
    PARAMS_MODELS,
    BlurParams,
    CropParams,
    MaskParams,
    OperationParams,
    RemoveParams,
    SwapParams,
    parse_color,
)


class Resources:
    """Things an operation may need beyond the matte (a face detector), loaded once on first use."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._items: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str, factory: Callable[[Any], Any]) -> Any:
        with self._lock:
            if name not in self._items:
                self._items[name] = factory(self.settings)
            return self._items[name]


@dataclass
class OpInput:
    image: DecodedImage
    matte: np.ndarray | None  # (H, W) float32 in [0, 1]: 1 is the object; None when not needed
    assets: Mapping[str, DecodedImage] = field(default_factory=dict)
    resources: Resources | None = None

    def asset(self, ref: str, field_name: str) -> DecodedImage:
        try:
            return self.assets[ref]
        except KeyError:
            raise InvalidParameterError(f"{field_name}: image {ref!r} was not provided", field=field_name) from None


@dataclass(frozen=True)
class Rendered:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB, or (H, W) uint8 grey
    alpha: np.ndarray | None = None  # (H, W) uint8, None when opaque


@dataclass(frozen=True)
class Operation:
    name: str
    params: type[OperationParams]
    apply: Callable[[OpInput, Any], Rendered]


def _cropped(inp: OpInput, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x0, y0, x1, y1 = box
    src_alpha = inp.image.alpha
    return (
        inp.image.rgb[y0:y1, x0:x1],
        inp.matte[y0:y1, x0:x1],
        None if src_alpha is None else src_alpha[y0:y1, x0:x1],
    )


def _maybe_crop(inp: OpInput, crop: bool, margin: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = inp.matte.shape
    box = crop_box(inp.matte, margin) if crop else (0, 0, w, h)
    rgb, matte, _ = _cropped(inp, box)
    return rgb, matte


def apply_mask(inp: OpInput, p: MaskParams) -> Rendered:
    matte = inp.matte if p.threshold is None else (inp.matte > p.threshold).astype(np.float32)
    return Rendered(alpha_to_uint8(matte))


def apply_remove(inp: OpInput, p: RemoveParams) -> Rendered:
    rgb, matte = _maybe_crop(inp, p.crop, p.margin)
    return Rendered(np.ascontiguousarray(rgb), alpha_to_uint8(matte))


def apply_crop(inp: OpInput, p: CropParams) -> Rendered:
    rgb, _, src_alpha = _cropped(inp, crop_box(inp.matte, p.margin, p.threshold))
    return Rendered(np.ascontiguousarray(rgb), None if src_alpha is None else np.ascontiguousarray(src_alpha))


def apply_blur(inp: OpInput, p: BlurParams) -> Rendered:
    return Rendered(blur_background(inp.image.rgb, inp.matte, p.strength), inp.image.alpha)


def apply_swap(inp: OpInput, p: SwapParams) -> Rendered:
    rgb, matte = _maybe_crop(inp, p.crop, p.margin)
    h, w = matte.shape
    canvas = (p.canvas_width or w, p.canvas_height or h)
    if canvas != (w, h) or p.scale is not None:
        rgb, matte = compose.place_object(rgb, matte, canvas, p.scale or 0.9, p.position)
    fill = parse_color(p.background_color)
    if p.background_image:
        bg = compose.fit_image(inp.asset(p.background_image, "background_image").rgb, canvas, p.fit, fill)
    else:
        bg = compose.solid(canvas, fill)
    out = compose.over(rgb, matte, bg)
    if p.logo:
        logo = inp.asset(p.logo, "logo")
        out = compose.paste_logo(
            out, logo.rgb, logo.alpha, p.logo_position, p.logo_scale, p.logo_opacity, p.logo_margin
        )
    return Rendered(out)


OPERATIONS: dict[str, Operation] = {}


def register(op: Operation) -> None:
    if PARAMS_MODELS.get(op.name) is not op.params:
        raise ValueError(f"operation {op.name!r} is not in the catalogue (maskq.params.PARAMS_MODELS)")
    OPERATIONS[op.name] = op


for _op in (
    Operation("mask", MaskParams, apply_mask),
    Operation("remove", RemoveParams, apply_remove),
    Operation("swap", SwapParams, apply_swap),
    Operation("blur", BlurParams, apply_blur),
    Operation("crop", CropParams, apply_crop),
):
    register(_op)


def get_operation(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise InvalidParameterError(
            f"unknown operation {name!r}; choose one of {', '.join(sorted(OPERATIONS))}", field="operation"
        ) from None


# Operations living in their own modules register themselves on import (after the names above exist).
from maskq.ops import faceblur as _faceblur  # noqa: E402,F401
