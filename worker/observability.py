"""Celery signal hooks for logs and metrics: nothing here runs inside a task body.

* (the log context goes into the message headers where the queue contract is:
  :mod:`maskq.service.queue`, a ``before_task_publish`` hook that the API loads too)
* ``after_setup_logger`` / ``after_setup_task_logger``: Celery's handlers get maskq's formatter
  (``MASKQ_LOG_FORMAT=json|text``) and context filter.
* ``task_prerun``: binds the headers (and the job id, the task's only argument) to the log context;
  a message sent without headers gets its tenant from the job record. Marks this process busy.
* ``task_postrun``: the task's last line (``task done``, with its outcome and duration), then the
  context is unbound and the process is free again.
* ``worker_process_init`` / ``worker_init``: the model-info gauge after the model is loaded, and a
  clean ``PROMETHEUS_MULTIPROC_DIR`` at start.

This module is imported by ``worker.app`` and imports ``prometheus_client`` only inside the handlers.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals

from maskq import logging as mlog
from maskq.service.queue import PROCESS_TASK

log = logging.getLogger("maskq.worker")

_tokens: dict[str, Any] = {}
_t0: dict[str, float] = {}


def _install_formatter(logger: Any = None, **_: Any) -> None:
    from maskq.settings import get_settings

    fmt = get_settings().log_format
    for lg in filter(None, (logger, logging.getLogger())):
        mlog.install_on(lg, fmt)


signals.after_setup_logger.connect(_install_formatter, weak=False)
signals.after_setup_task_logger.connect(_install_formatter, weak=False)


def _request_headers(task: Any) -> dict[str, Any]:
    """Custom message headers: top-level attributes of the request (protocol 2), or in ``headers``."""
    req = task.request
    found: dict[str, Any] = {}
    nested = getattr(req, "headers", None) or {}
    for header in mlog.HEADER_FIELDS.values():
        value = getattr(req, header, None)
        if value is None and isinstance(nested, dict):
            value = nested.get(header)
        if value is not None:
            found[header] = value
    return found


def _tenant_of(job_id: str) -> tuple[str | None, str | None]:
    """Tenant and operation from the record (one HMGET), for messages sent without headers."""
    try:
        from worker import runtime

        return runtime.get().jobs.owner_of(job_id)
    except Exception:  # noqa: BLE001 - logging context is best effort; the task will see the fault
        return None, None


@signals.task_prerun.connect
def _task_prerun(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    from worker import metrics

    ctx = mlog.context_from_headers(_request_headers(task))
    if args:
        ctx.setdefault("job_id", str(args[0]))
    if task is not None and task.name == PROCESS_TASK and ctx.get("job_id"):
        tenant, operation = _tenant_of(ctx["job_id"])
        if tenant and not ctx.get("tenant"):
            ctx["tenant"] = tenant
        if operation:
            ctx["operation"] = operation
    ctx["task_id"] = task_id
    if task_id:
        _tokens[task_id] = mlog.bind_fields(**ctx)
        _t0[task_id] = time.perf_counter()
    delivery = getattr(task.request, "delivery_info", None) or {} if task is not None else {}
    metrics.task_busy(delivery.get("routing_key"))
    log.info("task started", extra={"task": getattr(task, "name", None)})


@signals.task_postrun.connect
def _task_postrun(task_id: str | None = None, task: Any = None, retval: Any = None, state: str | None = None,
                  **_: Any) -> None:
    from worker import metrics

    t0 = _t0.pop(task_id, None) if task_id else None
    log.info("task done", extra={"task": getattr(task, "name", None), "celery_state": state,
                                 "outcome": retval if isinstance(retval, str | int) else type(retval).__name__,
                                 "duration_seconds": round(time.perf_counter() - t0, 4) if t0 else None})
    metrics.task_released()
    token = _tokens.pop(task_id, None) if task_id else None
    if token is not None:
        mlog.reset(token)


@signals.worker_init.connect
def _clean_metrics_dir(**_: Any) -> None:
    """A new worker starts from zero: files of processes that are gone (a previous run in the same
    emptyDir) would otherwise be summed into this one's totals."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.isdir(path):
        from worker import metrics

        metrics.clean_dir(path)


def model_info(seg: Any, settings: Any) -> tuple[str, str, str]:
    """(model, runtime, precision) of a loaded segmenter: the registry name, the runtime and its device."""
    spec = getattr(seg, "spec", None)
    model = spec.name if spec is not None else "unknown"
    runtime = getattr(seg, "runtime", None) or settings.runtime
    providers = getattr(seg, "providers", None)
    if providers:
        runtime = "onnxruntime-" + providers[0].removesuffix("ExecutionProvider").lower()
    return model, str(runtime), str(getattr(seg, "precision", settings.precision))


def record_model_loaded(seg: Any, settings: Any) -> None:
    """A prefork child is one task slot; a threads/solo pool's main process holds all its threads.
    Called for each model a process loads (at start, or at the first job that names it)."""
    from billiard.process import current_process

    from worker import metrics, runtime

    slots = 1 if current_process().name != "MainProcess" else (runtime.POOL_CONCURRENCY or 1)
    model, rt, precision = model_info(seg, settings)
    log.info("serving the %s model (%s, %s)", model, rt, precision, extra={"model": model})
    metrics.model_loaded(model, rt, precision, slots=slots)
