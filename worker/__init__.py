"""The Celery side of maskq: app and config (``app``), tasks (``tasks``), per-process state
(``runtime``), cross-job batching (``batcher``), webhooks (``webhooks``) and metrics (``metrics``).

Thin by design: every decision about images, records and storage lives in ``maskq``. Never imports
FastAPI.
"""
