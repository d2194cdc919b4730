"""decode -> network input -> batched inference -> soft alpha (+ confidence) -> operation -> encode.

One ``Pipeline`` per process holds the loaded models, each loaded the first time an image asks for
it (or at start, ``Pipeline.load``) and kept; the CLI and the worker call it. Many images go through
the network in one call per model (``process_many``), each keeping its own outcome: one corrupt
file fails alone.

With a region of interest (``roi``) the network sees that rectangle plus a margin of context
(``defaults.ROI_CONTEXT``), so a small object is seen bigger, and the matte is zero outside the
rectangle. Every matte-based result carries a confidence (``maskq.confidence``, from the network's
probabilities inside the roi) and ``review``: whether it is below the job's ``review_below``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskq import defaults, imaging
from maskq.confidence import mask_confidence
from maskq.errors import InternalError, MaskqError
from maskq.matting import network_input, soft_alpha
from maskq.ops import Operation, OpInput, Rendered, Resources, get_operation
from maskq.params import OperationParams, matte_options, parse_color, parse_params
from maskq.roi import parse_roi
from maskq.segmentation import Segmenter, load_segmenter
from maskq.settings import Settings, get_settings

STAGES = ("decode", "infer", "upsample", "confidence", "operation", "encode")

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, end exclusive


@dataclass
class ProcessResult:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)
    model: str | None = None  # the segmentation model behind the matte; None when none was needed
    confidence: float | None = None  # the mask's confidence in [0, 1]; None when no matte was made
    review: bool | None = None  # confidence below the job's review_below; None when no matte was made


@dataclass(frozen=True)
class WorkItem:
    """One image to process: what a job hands the pipeline (the CLI makes them too)."""

    data: bytes
    operation: str
    params: OperationParams | Mapping[str, Any] | None = None  # parsed already (the worker), or raw (the CLI)
    assets: Mapping[str, bytes] | None = None  # images the params name (background_image, logo), by ref


Outcome = ProcessResult | MaskqError  # each item's own: a result, or the typed error that failed it


@dataclass
class _Job:
    """One image on its way through the pipeline."""

    operation: Operation
    params: OperationParams
    image: imaging.DecodedImage
    assets: dict[str, imaging.DecodedImage]
    timings: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    foreground: np.ndarray | None = None  # at the network's size, of ``view`` (the whole image without roi)
    roi: Box | None = None  # the region of interest in image pixels; None: the whole image
    view: Box | None = None  # what the network sees: the roi plus context; None: the whole image
    review_below: float = defaults.REVIEW_BELOW


def context_box(roi: Box, width: int, height: int, context: float = defaults.ROI_CONTEXT) -> Box:
    """The roi grown by ``context`` of its longer side on each side, clipped to the image."""
    x1, y1, x2, y2 = roi
    m = round(context * max(x2 - x1, y2 - y1))
    return max(0, x1 - m), max(0, y1 - m), min(width, x2 + m), min(height, y2 + m)


def roi_in_view(roi: Box, view: Box, size: int) -> tuple[slice, slice]:
    """The roi's rows and columns in the network's (size, size) output of ``view`` (at least one each)."""
    vx, vy = view[2] - view[0], view[3] - view[1]
    c0 = min(size - 1, int((roi[0] - view[0]) * size / vx))
    r0 = min(size - 1, int((roi[1] - view[1]) * size / vy))
    c1 = max(c0 + 1, int(np.ceil((roi[2] - view[0]) * size / vx)))
    r1 = max(r0 + 1, int(np.ceil((roi[3] - view[1]) * size / vy)))
    return slice(r0, r1), slice(c0, c1)


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
    def __init__(self, settings: Settings | None = None, segmenters: Mapping[str, Segmenter] | None = None) -> None:
        self.settings = settings or get_settings()
        self._segmenters: dict[str, Segmenter] = dict(segmenters or {})
        self._lock = threading.Lock()
        self.resources = Resources(self.settings)
        self.on_model_loaded: Callable[[Segmenter], None] | None = None  # the worker records it

    @classmethod
    def load(cls, settings: Settings | None = None, models: list[str] | None = None) -> Pipeline:
        """Load models now (a worker's start-up: MASKQ_PRELOAD_MODELS), so that no job pays for it."""
        settings = settings or get_settings()
        names = models or settings.preload
        return cls(settings, {name: load_segmenter(settings, name) for name in names})

    def segmenter(self, model: str | None = None) -> Segmenter:
        """The loaded model by name (default: MASKQ_MODEL), loaded on first use and kept."""
        name = model or self.settings.model
        with self._lock:
            seg = self._segmenters.get(name)
            if seg is None:
                seg = self._segmenters[name] = load_segmenter(self.settings, name)
                if self.on_model_loaded:
                    self.on_model_loaded(seg)
            return seg

    @property
    def loaded_models(self) -> list[Segmenter]:
        return list(self._segmenters.values())

    def _decode(self, data: bytes) -> imaging.DecodedImage:
        return imaging.decode(data, max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_bytes)

    def _prepare(
        self, data: bytes, operation: str, params: OperationParams | Mapping[str, Any] | None,
        assets: Mapping[str, bytes],
    ) -> _Job:
        op = get_operation(operation)
        parsed = params if isinstance(params, OperationParams) else parse_params(operation, dict(params or {}))
        timings: dict[str, float] = {}
        with _timed(timings, "decode"):
            image = self._decode(data)
            resolved = {}
            for ref in parsed.asset_refs().values():
                if ref not in assets:
                    raise imaging.InvalidParameterError(f"image {ref!r} was not provided", field=ref)
                resolved[ref] = self._decode(assets[ref])
        job = _Job(op, parsed, image, resolved, timings, review_below=self.settings.review_below)
        wants = parsed.needs_matte()
        options = matte_options(parsed) if wants else None
        if wants:
            job.model = (options.model if options else None) or self.settings.model
        if options is not None:
            if options.review_below is not None:
                job.review_below = options.review_below
            if options.roi:
                h, w = image.rgb.shape[:2]
                roi = parse_roi(options.roi).box(w, h)
                if roi != (0, 0, w, h):
                    job.roi, job.view = roi, context_box(roi, w, h)
        return job

    @staticmethod
    def _network_view(job: _Job) -> np.ndarray:
        if job.view is None:
            return job.image.rgb
        x1, y1, x2, y2 = job.view
        return job.image.rgb[y1:y2, x1:x2]

    def _infer(self, jobs: list[_Job]) -> None:
        """One network call per model among the jobs."""
        for model in sorted({j.model for j in jobs if j.model}):
            needing = [j for j in jobs if j.model == model]
            segmenter = self.segmenter(model)
            t0 = time.perf_counter()
            batch = np.stack([network_input(self._network_view(j), segmenter.spec.input_size) for j in needing])
            foreground = segmenter.predict(batch)
            share = (time.perf_counter() - t0) / len(needing)
            for job, fg in zip(needing, foreground, strict=True):
                job.foreground = fg
                job.timings["infer"] = share

    def _finish(self, job: _Job) -> ProcessResult:
        matte = None
        confidence: float | None = None
        if job.foreground is not None:
            with _timed(job.timings, "upsample"):
                matte = self._matte(job)
                if job.image.alpha is not None:  # transparent source pixels are never object
                    matte *= job.image.alpha.astype(np.float32) * (1.0 / 255.0)
            with _timed(job.timings, "confidence"):
                fg = job.foreground
                if job.roi is not None:
                    fg = fg[roi_in_view(job.roi, job.view, fg.shape[0])]  # type: ignore[arg-type]
                confidence = mask_confidence(fg)
        with _timed(job.timings, "operation"):
            rendered = job.operation.apply(OpInput(job.image, matte, job.assets, self.resources), job.params)
        fmt = output_format(job.params, rendered, job.image.format)
        s, p, icc = self.settings, job.params, job.image.icc_profile
        # the encoder interleaves a full RGBA copy and fpng buffers its output: let go of the matte
        # and of what the result no longer needs first (a 12 MP job peaks ~100 MB lower)
        del matte
        job.image, job.foreground, job.assets = None, None, {}  # type: ignore[assignment]
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
        ext = "jpg" if fmt == "jpeg" else fmt
        review = None if confidence is None else confidence < job.review_below
        return ProcessResult(data, imaging.CONTENT_TYPES[fmt], ext, w, h, job.timings, job.model, confidence, review)

    @staticmethod
    def _matte(job: _Job) -> np.ndarray:
        """The (H, W) alpha: the whole photo's, or the view's placed in a zero matte and cut to the roi."""
        if job.roi is None:
            return soft_alpha(job.foreground, job.image.rgb)
        h, w = job.image.rgb.shape[:2]
        vx1, vy1, vx2, vy2 = job.view  # type: ignore[misc]
        x1, y1, x2, y2 = job.roi
        view_alpha = soft_alpha(job.foreground, job.image.rgb[vy1:vy2, vx1:vx2])
        matte = np.zeros((h, w), np.float32)
        matte[y1:y2, x1:x2] = view_alpha[y1 - vy1 : y2 - vy1, x1 - vx1 : x2 - vx1]
        return matte

    def process(
        self,
        data: bytes,
        operation: str,
        params: Mapping[str, Any] | None = None,
        assets: Mapping[str, bytes] | None = None,
    ) -> ProcessResult:
        """One image; raises a MaskqError subclass on bad input."""
        outcome = self.process_many([WorkItem(data, operation, params, assets)])[0]
        if isinstance(outcome, MaskqError):
            raise outcome
        return outcome

    def process_many(self, items: list[WorkItem]) -> list[Outcome]:
        """Many images, one inference call; each item's outcome is its own."""
        outcomes: list[Outcome | None] = [None] * len(items)
        jobs: list[tuple[int, _Job]] = []
        for i, item in enumerate(items):
            try:
                jobs.append((i, self._prepare(item.data, item.operation, item.params, item.assets or {})))
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
