"""The maskq API: ``uvicorn api.main:app``. ``create_app(settings)`` builds one (tests build several).

Middlewares, outermost first: request id + metrics + access log (:mod:`api.metrics`), then the body's
limits (:mod:`api.limits`): size (413), the upload budget (429), the body timeout (408), so that an
oversized body is told so rather than to come back later; errors are mapped to HTTP in
:mod:`api.errors` only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import maskq
from api import errors
from api.limits import BodyLimitMiddleware, BodyTimeoutMiddleware, UploadBudget, UploadBudgetMiddleware
from api.metrics import ObservabilityMiddleware
from api.routes import batches, health, jobs, ui, uploads
from api.services import Services
from maskq import logging as mlog
from maskq.errors import MaskqError
from maskq.settings import Settings, get_settings

log = logging.getLogger("maskq.api")

DESCRIPTION = """Asynchronous image segmentation jobs: cut out, swap or blur backgrounds, crop, mask, blur faces.

Authenticate with `Authorization: Bearer <API key>`. Errors share one body:
`{"error": {"code": "...", "message": "...", "details": {...}}}` with stable codes.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or get_settings()
    services = Services.from_settings(s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(s, "log_format", None):
            mlog.configure(s.log_format, s.log_level)
        try:  # uploads need the input bucket before any worker has started
            await run_in_threadpool(services.storage.ensure_buckets, 2)
        except MaskqError as exc:
            log.warning("could not prepare buckets at start-up: %s", exc)
        yield
        services.close()

    app = FastAPI(title="maskq", version=maskq.__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    errors.install(app)
    for router in (jobs.router, uploads.router, batches.router, health.router, ui.router):
        app.include_router(router)
    # each add_middleware wraps the ones before it: the last added is the outermost
    app.add_middleware(BodyTimeoutMiddleware, timeout=s.body_timeout_seconds)
    budget = UploadBudget(s.upload_budget_bytes)
    services.metrics.watch_uploads(lambda: budget.in_flight)
    app.add_middleware(UploadBudgetMiddleware, budget=budget)
    app.add_middleware(BodyLimitMiddleware, max_bytes=s.max_request_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=services.metrics)
    return app


app = create_app()
