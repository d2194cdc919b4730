"""A segmentation model behind one interface: ONNX Runtime by default, a TensorFlow SavedModel optionally.

A segmenter runs one model of the registry (``maskq.models``) and answers with its foreground
probability, whatever the model's own output is. It is loaded once per process (a worker's or the
CLI's) and is safe to call from several threads: ONNX Runtime sessions are thread-safe and release
the GIL while they compute.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from maskq import defaults
from maskq.errors import ModelUnavailableError
from maskq.models import MODELS, ModelSpec, spec_for_file
from maskq.settings import Settings, available_cpus

log = logging.getLogger(__name__)


class Segmenter(Protocol):
    runtime: str
    precision: str
    model_path: Path
    spec: ModelSpec

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) float32 RGB in [0, 1], S = spec.input_size -> (N, S, S) foreground probability."""
        ...


def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in ("gpu", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "gpu":
        log.warning("MASKQ_DEVICE=gpu but ONNX Runtime has no CUDA provider (%s): falling back to CPU", available)
    return ["CPUExecutionProvider"]


class OnnxSegmenter:
    runtime = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        spec: ModelSpec | None = None,
        precision: str = "fp32",
        device: str = "cpu",
        intra_op_threads: int = defaults.INTRA_OP_THREADS,
        max_batch: int = defaults.MAX_BATCH,
    ) -> None:
        import onnxruntime as ort

        if not Path(model_path).is_file():
            raise ModelUnavailableError(f"model file not found: {model_path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = intra_op_threads or available_cpus()
        opts.inter_op_num_threads = 1
        # no arena: it keeps the largest activations ever seen (~60 MB) for the life of the worker;
        # plain malloc costs <1 ms per call at this size
        opts.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(str(model_path), opts, providers=onnx_providers(device))
        except Exception as err:  # ORT raises its own untyped errors for a bad file
            raise ModelUnavailableError(f"cannot load {model_path}: {err}") from None
        self.model_path = Path(model_path)
        self.spec = spec or spec_for_file(model_path)
        self.precision = precision
        self.max_batch = max_batch
        self.providers = self.session.get_providers()
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """The network's own output (evaluation tools; the service uses ``predict``)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [
            self.session.run([self._output], {self._input: batch[i : i + self.max_batch]})[0]
            for i in range(0, len(batch), self.max_batch)
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.spec.foreground(self.predict_raw(batch))


class TensorFlowSegmenter:
    """The same network from a Keras/TF SavedModel: a second runtime for parity checks and GPUs
    where ONNX Runtime's CUDA build is not available. TensorFlow is imported only here."""

    runtime = "tensorflow"

    def __init__(self, model_path: Path, spec: ModelSpec, precision: str = "fp32") -> None:
        try:
            import tensorflow as tf
        except ImportError:
            raise ModelUnavailableError("MASKQ_RUNTIME=tensorflow needs the 'train' extra (TensorFlow)") from None
        if not Path(model_path).exists():
            raise ModelUnavailableError(f"SavedModel not found: {model_path}")
        self._tf = tf
        self._model = tf.saved_model.load(str(model_path))
        self._fn = self._model.signatures["serving_default"]
        self.model_path = Path(model_path)
        self.spec = spec
        self.precision = precision

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = self._fn(self._tf.constant(np.asarray(batch, dtype=np.float32)))
        return self.spec.foreground(next(iter(out.values())).numpy())


def load_segmenter(settings: Settings, model: str | None = None) -> Segmenter:
    """``model`` (default: MASKQ_MODEL) on the runtime the settings ask for; raises
    ModelUnavailableError with the path when its file is missing."""
    spec = MODELS[model or settings.model]
    if settings.runtime == "tensorflow":
        if not spec.savedmodel:
            raise ModelUnavailableError(f"model {spec.name!r} ships no SavedModel; use MASKQ_RUNTIME=onnx")
        return TensorFlowSegmenter(settings.models_dir / spec.savedmodel, spec, settings.precision)
    return OnnxSegmenter(
        settings.model_path(spec.name),
        spec,
        precision=settings.precision,
        device=settings.device,
        intra_op_threads=settings.intra_op_threads,
        max_batch=settings.max_batch,
    )
