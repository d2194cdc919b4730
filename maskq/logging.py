"""Structured logs: one JSON object per line, carrying the job id, tenant and request id of the
work in hand, from the API request through the Celery message headers to the worker's last line.

Three pieces, all stdlib ``logging``:

* a context (a :class:`contextvars.ContextVar`): :func:`bind` sets fields for the current request,
  task or thread (``with bind(job_id=..., tenant=...):``), :func:`current` reads them;
* :class:`ContextFilter` copies the bound fields onto every record that does not already carry them
  (an explicit ``extra={"job_id": ...}`` wins);
* :class:`JsonFormatter` writes ``{"ts", "level", "logger", "message", "job_id", "tenant",
  "request_id", ...extras, "exc"}`` on one line; the text formatter appends the same ids as
  ``key=value`` so a laptop's console stays readable.

:func:`configure` installs both on the root logger from the settings (``MASKQ_LOG_FORMAT=json|text``,
``MASKQ_LOG_LEVEL``). :data:`HEADER_FIELDS` maps the context to Celery message headers: the worker
app injects them when a task is published (``before_task_publish``) and binds them again when it
runs (``task_prerun``), so ids cross the queue without touching task arguments.

This module imports neither Celery nor FastAPI (maskq's rule); it is named ``logging`` inside the
``maskq`` package, which is safe because Python 3 imports are absolute: ``import logging`` here and
everywhere else is the standard library.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

# the fields every line may carry, in the order they are written
CONTEXT_FIELDS = ("request_id", "job_id", "tenant", "operation", "task_id")
# context field -> Celery message header (prefixed: headers share a namespace with Celery's own)
HEADER_FIELDS = {"request_id": "maskq_request_id", "job_id": "maskq_job_id", "tenant": "maskq_tenant"}
# the HTTP header a request id arrives in and is echoed back in
REQUEST_ID_HEADER = "X-Request-ID"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("maskq_log_context", default=_EMPTY)

# attributes every LogRecord has: anything else on a record came from ``extra=`` and is written out
_RESERVED = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def current() -> dict[str, Any]:
    """The fields bound in this context (a copy)."""
    return dict(_context.get())


def bind_fields(**fields: Any) -> contextvars.Token:
    """Add fields to the context (``None`` values are ignored); returns a token for :func:`reset`."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _context.set(merged)


def reset(token: contextvars.Token) -> None:
    """Restore the context as it was before the :func:`bind_fields` that gave ``token``."""
    try:
        _context.reset(token)
    except ValueError:  # made in another context (a signal handler pair on another thread)
        _context.set(_EMPTY)


def clear() -> None:
    _context.set(_EMPTY)


@contextmanager
def bind(**fields: Any) -> Iterator[dict[str, Any]]:
    """``with bind(job_id=..., tenant=...):`` every log line inside carries these fields."""
    token = bind_fields(**fields)
    try:
        yield current()
    finally:
        reset(token)


def headers_from_context() -> dict[str, str]:
    """The Celery message headers that carry the current context to the worker."""
    ctx = _context.get()
    return {h: str(ctx[f]) for f, h in HEADER_FIELDS.items() if ctx.get(f) is not None}


def context_from_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The inverse of :func:`headers_from_context` (unknown headers ignored)."""
    if not headers:
        return {}
    return {f: str(headers[h]) for f, h in HEADER_FIELDS.items() if headers.get(h) not in (None, "")}


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record; fields given with ``extra=`` are kept as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601, ms), level, logger, message, the context
    fields, any other ``extra=`` field, and the traceback as ``exc`` (a string, still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = _jsonable(value)
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in doc and not key.startswith("_"):
                doc[key] = _jsonable(value)
        doc["pid"] = record.process
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The classic line, with the context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None) is not None)
        if not ids:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the ids
        return f"{head} [{ids}]{sep}{tail}"


_HANDLER_FLAG = "_maskq_handler"


def make_handler(fmt: str = "json", stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_FLAG, True)
    return handler


def configure(fmt: str | None = None, level: str | int | None = None, stream: Any = None) -> logging.Handler:
    """Send the root logger's records through one maskq handler (idempotent: a second call replaces
    the first handler). ``fmt``/``level`` default to ``MASKQ_LOG_FORMAT`` / ``MASKQ_LOG_LEVEL``."""
    if fmt is None or level is None:
        from maskq.settings import get_settings

        s = get_settings()
        fmt = fmt or s.log_format
        level = level or s.log_level
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_FLAG, False):
            root.removeHandler(h)
    handler = make_handler(fmt, stream)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def install_on(logger: logging.Logger, fmt: str) -> None:
    """Give an existing logger's handlers (e.g. the ones Celery set up) maskq's formatter and filter."""
    for h in logger.handlers:
        h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        if not any(isinstance(f, ContextFilter) for f in h.filters):
            h.addFilter(ContextFilter())
