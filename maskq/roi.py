"""The region of interest (``roi``): where the object is, as a rectangle in pixels or percent.

The syntax follows remove.bg's ``roi``: four values ``x1 y1 x2 y2`` (commas or spaces between
them), each in pixels (a bare number or ``px``) or in percent of the image's width or height
(``%``), or a list of four such values. ``"10%,20%,90%,80%"``, ``"0 0 640px 480px"`` and
``[10, 20, 300, 200]`` all work. The rectangle runs from (x1, y1) to (x2, y2), exclusive: the whole
image is ``0,0,W,H`` or ``0%,0%,100%,100%``.

Pure Python (no OpenCV): the API checks the syntax when a job is created; the size checks need the
image, so they happen after decoding (``Roi.box``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from maskq.errors import InvalidParameterError

_TOKEN = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(px|%)?$", re.IGNORECASE)
_NAMES = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class Coordinate:
    value: float
    percent: bool

    def pixels(self, size: int) -> int:
        return round(self.value * size / 100.0) if self.percent else round(self.value)


def _coordinate(raw: Any, name: str) -> Coordinate:
    if isinstance(raw, bool):
        raise ValueError(f"{name} is not a number: {raw!r}")
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw) or raw < 0:
            raise ValueError(f"{name} must be a finite number >= 0, not {raw!r}")
        return Coordinate(float(raw), False)
    if isinstance(raw, str):
        m = _TOKEN.match(raw.strip())
        if m:
            return Coordinate(float(m.group(1)), (m.group(2) or "").lower() == "%")
    raise ValueError(f"{name} is not a pixel count or a percentage: {raw!r}")


@dataclass(frozen=True)
class Roi:
    x1: Coordinate
    y1: Coordinate
    x2: Coordinate
    y2: Coordinate

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in pixels of a ``width`` x ``height`` image, clipped to it; an empty or
        outside rectangle is ``invalid_parameter`` naming ``roi``."""
        x1 = min(max(self.x1.pixels(width), 0), width)
        x2 = min(max(self.x2.pixels(width), 0), width)
        y1 = min(max(self.y1.pixels(height), 0), height)
        y2 = min(max(self.y2.pixels(height), 0), height)
        if x2 <= x1 or y2 <= y1:
            raise InvalidParameterError(
                f"roi: the rectangle ({self.describe()}) holds no pixel of the {width}x{height} image",
                field="roi")
        return x1, y1, x2, y2

    def describe(self) -> str:
        return ",".join(f"{c.value:g}{'%' if c.percent else ''}" for c in (self.x1, self.y1, self.x2, self.y2))


def parse_roi(value: Any) -> Roi:
    """A ``roi`` parameter -> Roi; ValueError (with the reason) when it is malformed or empty."""
    if isinstance(value, str):
        tokens = [t for t in re.split(r"[,\s;]+", value.strip()) if t]
    elif isinstance(value, (list, tuple)):
        tokens = list(value)
    else:
        raise ValueError("give x1,y1,x2,y2 in pixels or percent, e.g. '10%,20%,90%,80%' or [10, 20, 300, 200]")
    if len(tokens) != 4:
        raise ValueError(f"needs 4 values x1,y1,x2,y2 (pixels or percent), got {len(tokens)}")
    coords = [_coordinate(t, n) for t, n in zip(tokens, _NAMES, strict=True)]
    for c, n in zip(coords, _NAMES, strict=True):
        if c.percent and c.value > 100:
            raise ValueError(f"{n} is over 100%: {c.value:g}%")
    roi = Roi(*coords)
    for a, b, lo, hi in ((roi.x1, roi.x2, "x1", "x2"), (roi.y1, roi.y2, "y1", "y2")):
        if a.percent == b.percent and b.value <= a.value:
            raise ValueError(f"{hi} must be greater than {lo} (an empty rectangle): {roi.describe()}")
    return roi
