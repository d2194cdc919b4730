"""maskq: asynchronous image segmentation jobs (remove, swap or blur a background, blur faces).

The core library: settings, imaging, the segmentation runtime, the operations and the CLI. It
imports neither Celery nor FastAPI, so a laptop runs it with no servers at all.
"""

__version__ = "0.1.0"
