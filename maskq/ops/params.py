"""The parameters of each operation, validated by pydantic: shared by the CLI, the worker and the API.

Imports neither OpenCV nor ONNX Runtime, so the API can validate a job without loading a model.
Images that parameters refer to (a background, a logo) are named by a reference string that the
caller resolves: a file path in the CLI, an S3 key in the service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from PIL import ImageColor
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from maskq.errors import InvalidParameterError

Rgb = tuple[int, int, int]
Position = Literal["center", "top", "bottom", "left", "right", "top-left", "top-right", "bottom-left", "bottom-right"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def parse_color(value: Any) -> Rgb:
    """'#fff', '#ffffff', 'white', 'rgb(1,2,3)' or a 3-list -> (r, g, b)."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return tuple(value)  # type: ignore[return-value]
    if isinstance(value, str):
        try:
            rgb = ImageColor.getrgb(value.strip())
            return rgb[:3]  # type: ignore[return-value]
        except ValueError:
            pass
    raise ValueError(f"not a colour: {value!r} (use '#rrggbb', a CSS colour name or [r, g, b])")


class OperationParams(BaseModel):
    """Output options every operation shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["auto", "png", "webp", "jpeg"] = Field(
        "auto", description="output format; auto keeps JPEG for opaque JPEG inputs and PNG otherwise"
    )
    quality: int | None = Field(None, ge=1, le=100, description="JPEG/WebP quality; default from settings")
    flatten_color: str = Field("#ffffff", description="colour under transparent pixels when the format is JPEG")

    @field_validator("flatten_color")
    @classmethod
    def _color(cls, v: str) -> str:
        parse_color(v)
        return v


class MaskParams(OperationParams):
    """The alpha matte as a grey image: white is the object."""

    threshold: Fraction | None = Field(None, description="a hard 0/255 mask at this alpha instead of a soft one")


class CropOptions(BaseModel):
    crop: bool = Field(False, description="crop the output to the object's bounding box")
    margin: float = Field(0.05, ge=0.0, le=2.0, description="margin around the object, as a share of its size")


class CropParams(OperationParams):
    """The original pixels cropped to the object with a margin."""

    margin: float = Field(0.05, ge=0.0, le=2.0, description="margin around the object, as a share of its size")
    threshold: Fraction = Field(0.5, description="alpha above which a pixel belongs to the object")


class RemoveParams(OperationParams, CropOptions):
    """The object on a transparent background (RGBA)."""


class SwapParams(OperationParams, CropOptions):
    """The object on a new background: a colour or an image, on an optional canvas, with a logo."""

    background_color: str = Field("#ffffff", description="used when no background image is given")
    background_image: str | None = Field(None, description="reference to an image: a path (CLI) or an upload key")
    fit: Literal["cover", "contain"] = Field("cover", description="how the background image fills the canvas")
    canvas_width: int | None = Field(None, ge=1, le=10_000, description="output width; default: the input's")
    canvas_height: int | None = Field(None, ge=1, le=10_000, description="output height; default: the input's")
    scale: float | None = Field(
        None, gt=0.0, le=1.0, description="object's bounding box as a share of the canvas; default keeps its place"
    )
    position: Position = Field("center", description="where the scaled object sits on the canvas")
    logo: str | None = Field(None, description="reference to a logo image (PNG with alpha works best)")
    logo_position: Position = "bottom-right"
    logo_scale: float = Field(0.15, gt=0.0, le=1.0, description="logo width as a share of the canvas width")
    logo_opacity: Fraction = 1.0
    logo_margin: float = Field(0.03, ge=0.0, le=0.5, description="gap to the canvas edge, share of its width")

    @field_validator("background_color")
    @classmethod
    def _bg(cls, v: str) -> str:
        parse_color(v)
        return v


class BlurParams(OperationParams):
    """The background blurred, the object sharp."""

    strength: float = Field(40.0, ge=1.0, le=100.0, description="1 barely soft, 100 unrecognisable")


PARAMS_MODELS: dict[str, type[OperationParams]] = {
    "mask": MaskParams,
    "remove": RemoveParams,
    "swap": SwapParams,
    "blur": BlurParams,
    "crop": CropParams,
}


def register_params(operation: str, model: type[OperationParams]) -> None:
    """Extension point for operations defined elsewhere (face blur)."""
    PARAMS_MODELS[operation] = model


def parse_params(operation: str, params: dict[str, Any] | None) -> OperationParams:
    """Validate an operation's parameters; the first bad field is named in the error."""
    model = PARAMS_MODELS.get(operation)
    if model is None:
        raise InvalidParameterError(
            f"unknown operation {operation!r}; choose one of {', '.join(sorted(PARAMS_MODELS))}", field="operation"
        )
    try:
        return model.model_validate(params or {})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        msg = first["msg"].removeprefix("Value error, ")
        raise InvalidParameterError(f"{operation}: {field}: {msg}" if field else f"{operation}: {msg}", field=field) from None
