"""The ``faceblur`` operation: the adapter between the ops registry and ``maskq.faces``.

It needs no matte (the pipeline skips the U-Net for it), and the detector is a shared resource
loaded on first use and kept for the life of the process, like the U-Net session. Importing this
module registers the operation; ``maskq.ops`` imports it at its end.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from maskq.ops import Operation, OpInput, Rendered, get_operation, register
from maskq.params import FaceBlurParams

RESOURCE = "face_detector"


def load_detector(settings: Any):
    """The process's face detector, from ``settings.models_dir`` with its thread count."""
    from maskq.faces.detector import FaceDetector  # ONNX Runtime and OpenCV only when used

    return FaceDetector.load(settings.models_dir, getattr(settings, "intra_op_threads", 0))


def apply_faceblur(inp: OpInput, p: FaceBlurParams) -> Rendered:
    from maskq.faces.blur import anonymize
    from maskq.faces.detector import PIXEL_BUDGETS

    if inp.resources is None:
        raise RuntimeError("faceblur needs the pipeline's resources (the face detector)")
    detector = inp.resources.get(RESOURCE, load_detector)
    rgb = inp.image.rgb
    faces = detector.detect(rgb, threshold=p.threshold, pixel_budget=PIXEL_BUDGETS[p.detail])
    anonymised = anonymize(rgb, faces, p)
    background = p.background_model()
    if background is None:
        return Rendered(anonymised, inp.image.alpha)
    # the background operation sees the anonymised photo: no face survives in any output
    image = replace(inp.image, rgb=anonymised)
    return get_operation(p.background).apply(replace(inp, image=image), background)


register(Operation("faceblur", FaceBlurParams, apply_faceblur))
