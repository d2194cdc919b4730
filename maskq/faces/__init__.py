"""Face detection (CenterFace in ONNX Runtime) and anonymisation: the ``faceblur`` operation.

``detector`` finds faces, ``decode`` turns network outputs into boxes, ``blur`` replaces them,
``params`` validates the operation's parameters (imported by ``maskq.params``, so the API sees
them without OpenCV) and ``cli`` is ``maskq faces``. The operation itself is registered by
``maskq.ops.faceblur`` when ``maskq.ops`` is imported.
"""
