"""decode -> network input -> batched inference -> soft alpha -> operation -> encode.

One ``Pipeline`` per process holds the loaded model; the CLI and the worker call it. Many images
go through the network in one call (``process_many``), each keeping its own outcome: one corrupt
file fails alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskq import defaults, imaging
from maskq.errors import InternalError, MaskqError
from maskq.matting import network_input, soft_alpha
from maskq.ops import Operation, OpInput, Rendered, Resources, get_operation
from maskq.params import OperationParams, parse_color, parse_params
from maskq.segmentation import Segmenter, load_segmenter
from maskq.settings import Settings, get_settings

STAGES = ("decode", "infer", "upsample", "operation", "encode")


@dataclass
class ProcessResult:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Job:
    """One image on its way through the pipeline."""

    operation: Operation
    params: OperationParams
    image: imaging.DecodedImage
    assets: dict[str, imaging.DecodedImage]
    timings: dict[str, float] = field(default_factory=dict)
    probs: np.ndarray | None = None


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def output_format(params: OperationParams, rendered: Rendered, source_format: str) -> str:
    """'auto': PNG when the result has transparency or is a mask, else keep a JPEG source's JPEG."""
    if params.format != "auto":
        return params.format
    if rendered.alpha is not None or rendered.pixels.ndim == 2:
        return "png"
    return "jpeg" if source_format in ("JPEG", "MPO") else "png"


class Pipeline:
    def __init__(self, settings: Settings | None = None, segmenter: Segmenter | None = None) -> None:
        self.settings = settings or get_settings()
        self._segmenter = segmenter
        self.resources = Resources(self.settings)

    @classmethod
    def load(cls, settings: Settings | None = None) -> Pipeline:
        """Load the model now (a worker's start-up), so that no task pays for it."""
        settings = settings or get_settings()
        return cls(settings, load_segmenter(settings))

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = load_segmenter(self.settings)
        return self._segmenter

    def _decode(self, data: bytes) -> imaging.DecodedImage:
        return imaging.decode(data, max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_bytes)

    def _prepare(
        self, data: bytes, operation: str, params: Mapping[str, Any] | None, assets: Mapping[str, bytes]
    ) -> _Job:
        op = get_operation(operation)
        parsed = parse_params(operation, dict(params or {}))
        timings: dict[str, float] = {}
        with _timed(timings, "decode"):
            image = self._decode(data)
            resolved = {}
            for ref in op.asset_refs(parsed):
                if ref not in assets:
                    raise imaging.InvalidParameterError(f"image {ref!r} was not provided", field=ref)
                resolved[ref] = self._decode(assets[ref])
        return _Job(op, parsed, image, resolved, timings)

    def _infer(self, jobs: list[_Job]) -> None:
        needing = [j for j in jobs if j.operation.wants_matte(j.params)]
        if not needing:
            return
        t0 = time.perf_counter()
        batch = np.stack([network_input(j.image.rgb, defaults.NETWORK_SIZE) for j in needing])
        probs = self.segmenter.predict(batch)
        share = (time.perf_counter() - t0) / len(needing)
        for job, p in zip(needing, probs, strict=True):
            job.probs = p
            job.timings["infer"] = share

    def _finish(self, job: _Job) -> ProcessResult:
        matte = None
        if job.probs is not None:
            with _timed(job.timings, "upsample"):
                matte = soft_alpha(job.probs, job.image.rgb)
                if job.image.alpha is not None:  # transparent source pixels are never object
                    matte *= job.image.alpha.astype(np.float32) * (1.0 / 255.0)
        with _timed(job.timings, "operation"):
            rendered = job.operation.apply(OpInput(job.image, matte, job.assets, self.resources), job.params)
        fmt = output_format(job.params, rendered, job.image.format)
        s, p, icc = self.settings, job.params, job.image.icc_profile
        # the encoder interleaves a full RGBA copy and fpng buffers its output: let go of the matte
        # and of what the result no longer needs first (a 12 MP job peaks ~100 MB lower)
        del matte
        job.image, job.probs, job.assets = None, None, {}  # type: ignore[assignment]
        with _timed(job.timings, "encode"):
            data = imaging.encode(
                rendered.pixels,
                rendered.alpha,
                fmt,  # type: ignore[arg-type]
                icc_profile=icc,
                background=parse_color(p.flatten_color),
                jpeg_quality=p.quality or s.jpeg_quality,
                webp_quality=p.quality or s.webp_quality,
                png_compress_level=s.png_compress_level,
                png_fast=s.png_fast,
            )
        h, w = rendered.pixels.shape[:2]
        return ProcessResult(data, imaging.CONTENT_TYPES[fmt], "jpg" if fmt == "jpeg" else fmt, w, h, job.timings)

    def process(
        self,
        data: bytes,
        operation: str,
        params: Mapping[str, Any] | None = None,
        assets: Mapping[str, bytes] | None = None,
    ) -> ProcessResult:
        """One image; raises a MaskqError subclass on bad input."""
        outcome = self.process_many([(data, operation, params, assets)])[0]
        if isinstance(outcome, MaskqError):
            raise outcome
        return outcome

    def process_many(self, items: list[tuple]) -> list[ProcessResult | MaskqError]:
        """Many images, one inference call; item = (data, operation, params[, assets]).

        Each item's outcome is its own: a result, or the typed error that failed it.
        """
        outcomes: list[ProcessResult | MaskqError | None] = [None] * len(items)
        jobs: list[tuple[int, _Job]] = []
        for i, item in enumerate(items):
            data, operation, params = item[:3]
            assets = item[3] if len(item) > 3 and item[3] else {}
            try:
                jobs.append((i, self._prepare(data, operation, params, assets)))
            except MaskqError as err:
                outcomes[i] = err
        try:
            self._infer([j for _, j in jobs])
        except MaskqError as err:
            for i, _ in jobs:
                outcomes[i] = err
            jobs = []
        for i, job in jobs:
            try:
                outcomes[i] = self._finish(job)
            except MaskqError as err:
                outcomes[i] = err
            except MemoryError:
                outcomes[i] = imaging.ImageTooLargeError("not enough memory to process this image")
        return [o if o is not None else InternalError("no outcome") for o in outcomes]
