"""Face detection (CenterFace in ONNX Runtime) and anonymisation: the ``faceblur`` operation.

``detector`` finds faces, ``decode`` turns network outputs into boxes, ``blur`` replaces them,
``params`` validates the operation's parameters and ``cli`` is ``maskq faces``.

``maskq.ops`` is imported first: its package registers ``faceblur`` (``maskq.ops.faceblur``), which
needs ``params.FaceBlurParams``, which subclasses ``maskq.ops.params.OperationParams``. Loading
``maskq.ops`` before any module of this package keeps that chain acyclic whichever side a program
imports first.
"""

import maskq.ops  # noqa: F401
