"""decode -> network input -> batched inference -> soft alpha -> operation -> encode.

One ``Pipeline`` per process holds the loaded models, each loaded the first time an image asks for
it (or at start, ``Pipeline.load``) and kept; the CLI and the worker call it. Many images go through
the network in one call per model (``process_many``), each keeping its own outcome: one corrupt
file fails alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskq import imaging
from maskq.errors import InternalError, MaskqError
from maskq.matting import network_input, soft_alpha
from maskq.ops import Operation, OpInput, Rendered, Resources, get_operation
from maskq.params import OperationParams, matte_model, parse_color, parse_params
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
    model: str | None = None  # the segmentation model behind the matte; None when none was needed


@dataclass
class _Job:
    """One image on its way through the pipeline."""

    operation: Operation
    params: OperationParams
    image: imaging.DecodedImage
    assets: dict[str, imaging.DecodedImage]
    timings: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    foreground: np.ndarray | None = None


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
        model = (matte_model(parsed) or self.settings.model) if op.wants_matte(parsed) else None
        return _Job(op, parsed, image, resolved, timings, model)

    def _infer(self, jobs: list[_Job]) -> None:
        """One network call per model among the jobs."""
        for model in sorted({j.model for j in jobs if j.model}):
            needing = [j for j in jobs if j.model == model]
            segmenter = self.segmenter(model)
            t0 = time.perf_counter()
            batch = np.stack([network_input(j.image.rgb, segmenter.spec.input_size) for j in needing])
            foreground = segmenter.predict(batch)
            share = (time.perf_counter() - t0) / len(needing)
            for job, fg in zip(needing, foreground, strict=True):
                job.foreground = fg
                job.timings["infer"] = share

    def _finish(self, job: _Job) -> ProcessResult:
        matte = None
        if job.foreground is not None:
            with _timed(job.timings, "upsample"):
                matte = soft_alpha(job.foreground, job.image.rgb)
                if job.image.alpha is not None:  # transparent source pixels are never object
                    matte *= job.image.alpha.astype(np.float32) * (1.0 / 255.0)
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
        return ProcessResult(data, imaging.CONTENT_TYPES[fmt], ext, w, h, job.timings, job.model)

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
