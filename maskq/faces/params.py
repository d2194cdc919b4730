"""Parameters of the ``faceblur`` operation: they live with every other operation's in
:mod:`maskq.params` (one registry, importable without OpenCV or ONNX Runtime); re-exported here
under the names the face modules use.
"""

from maskq.params import FACE_DEFAULT_DETAIL as DEFAULT_DETAIL
from maskq.params import FACE_DEFAULT_FEATHER as DEFAULT_FEATHER
from maskq.params import FACE_DEFAULT_PIXELS as DEFAULT_PIXELS
from maskq.params import FACE_DEFAULT_SCALE as DEFAULT_SCALE
from maskq.params import FACE_DEFAULT_STRENGTH as DEFAULT_STRENGTH
from maskq.params import FACE_DEFAULT_THRESHOLD as DEFAULT_THRESHOLD
from maskq.params import FACE_MIN_STRENGTH as MIN_STRENGTH
from maskq.params import FaceBlurParams

__all__ = [
    "DEFAULT_DETAIL", "DEFAULT_FEATHER", "DEFAULT_PIXELS", "DEFAULT_SCALE", "DEFAULT_STRENGTH",
    "DEFAULT_THRESHOLD", "MIN_STRENGTH", "FaceBlurParams",
]
