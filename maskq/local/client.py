"""A small synchronous client for maskq's HTTP API (standard library only: no extra dependency).

    from maskq.local.client import Client
    c = Client("http://127.0.0.1:8000", api_key="...")
    job = c.submit("photo.jpg", "remove", {"format": "png"})   # path, bytes or a binary file
    job = c.wait(job["id"], timeout=60)                         # polls with backoff until it ends
    if job["state"] == "succeeded":
        c.download(job["id"], "photo-cut.png")

The stable interface (kept compatible; the demo and the tests use it):

* ``Client(base_url, api_key, timeout=30.0)``
* ``submit(image, operation, params=None, *, webhook=None, webhook_events=None, idempotency_key=None)``
  -> job document (dict). ``image``: bytes, a path (str / Path) or a binary file object; or
  ``input_key=`` (from :meth:`upload`) instead of ``image``.
* ``upload(image, content_type=None)`` -> input key: asks ``POST /v1/uploads`` for a presigned PUT
  URL and PUTs the bytes straight to S3 (for large images).
* ``get(job_id)``, ``list(state=None, limit=None, cursor=None)``, ``cancel(job_id)`` -> documents.
* ``wait(job_id, timeout=120.0, poll=0.1, max_poll=2.0)`` -> the finished job document (succeeded,
  failed or canceled; a failed job is returned, not raised); ``JobTimeoutError`` after ``timeout``.
* ``download(job_id, path)`` -> ``Path``: the result fetched from its presigned URL.
* ``submit_batch(images, operation, params=None, ...)`` / ``get_batch(batch_id)``.
* ``health()`` / ``ready()``.

Errors: an error answer raises the :mod:`maskq.errors` class of its ``code`` (``NotFoundError``,
``InvalidParameterError`` with ``.field``, ``BacklogFullError`` with ``.retry_after`` ...), with
``.status`` (the HTTP status) and ``.details``; an unknown code raises :class:`ApiError`. A server
that cannot be reached raises ``StorageUnavailableError``-like :class:`ConnectionFailed`.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from maskq.errors import ERROR_CODES, InvalidParameterError, JobTimeoutError, MaskqError

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
ImageLike = bytes | bytearray | str | Path | BinaryIO


class ApiError(MaskqError):
    """An error answer whose code this client does not know (a newer server)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code  # type: ignore[misc]


class ConnectionFailed(MaskqError):
    """The API could not be reached (refused, reset, timed out)."""

    code = "connection_failed"
    transient = True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401 - we read Location ourselves
        return None


def _read_image(image: ImageLike) -> tuple[bytes, str]:
    if isinstance(image, bytes | bytearray):
        return bytes(image), "image"
    if isinstance(image, str | Path):
        p = Path(image)
        return p.read_bytes(), p.name
    return image.read(), Path(getattr(image, "name", "image")).name


def _multipart(fields: Mapping[str, str | None], files: Iterable[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "maskq-" + uuid.uuid4().hex
    buf = io.BytesIO()
    for name, value in fields.items():
        if value is None:
            continue
        buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        buf.write(str(value).encode() + b"\r\n")
    for name, filename, data in files:
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        buf.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        buf.write(data + b"\r\n")
    buf.write(f"--{boundary}--\r\n".encode())
    return buf.getvalue(), f"multipart/form-data; boundary={boundary}"


def error_from(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> MaskqError:
    """The typed exception for an error answer."""
    try:
        err = json.loads(body)["error"]
        code, message, details = err["code"], err.get("message") or "", dict(err.get("details") or {})
    except (ValueError, KeyError, TypeError):
        code, message, details = "internal", f"HTTP {status}: {body[:200]!r}", {}
    cls = ERROR_CODES.get(code)
    if cls is None:
        exc: MaskqError = ApiError(code, message, **details)
    elif cls is InvalidParameterError:
        field = details.pop("field", None)
        exc = InvalidParameterError(message, field=field, **details)
    else:
        exc = cls(message, **details)
    exc.status = status  # type: ignore[attr-defined]
    retry_after = (headers or {}).get("Retry-After") or details.get("retry_after")
    if retry_after is not None:
        exc.retry_after = float(retry_after)  # type: ignore[attr-defined]
    return exc


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    # ---- transport ----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                headers: Mapping[str, str] | None = None, query: Mapping[str, Any] | None = None,
                auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One HTTP call; error answers (>= 400) raise typed errors, others return (status, headers, body)."""
        url = self.base_url + path
        q = {k: v for k, v in (query or {}).items() if v is not None}
        if q:
            url += "?" + urllib.parse.urlencode(q)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = f"Bearer {self.api_key}"
        if content_type:
            h["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, method=method, headers=h)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            data = exc.read()
            if exc.code < 400:  # a redirect we chose not to follow
                return exc.code, dict(exc.headers.items()), data
            raise error_from(exc.code, data, dict(exc.headers.items())) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionFailed(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None

    def _json(self, method: str, path: str, payload: Any = None, **kwargs: Any) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        _, _, data = self.request(method, path, body=body, content_type="application/json" if body else None,
                                  **kwargs)
        return json.loads(data)

    # ---- jobs ---------------------------------------------------------------------------------
    def submit(self, image: ImageLike | None = None, operation: str = "remove", params: Mapping[str, Any] | None = None,
               *, webhook: str | None = None, webhook_events: list[str] | None = None,
               idempotency_key: str | None = None, input_key: str | None = None) -> dict[str, Any]:
        """Create a job from an image (multipart) or from an uploaded ``input_key`` (JSON)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        if input_key is not None:
            payload: dict[str, Any] = {"operation": operation, "input_key": input_key, "params": dict(params or {})}
            if webhook:
                payload["webhook_url"] = webhook
            if webhook_events:
                payload["webhook_events"] = list(webhook_events)
            return self._json("POST", "/v1/jobs", payload, headers=headers)
        if image is None:
            raise ValueError("submit() needs an image or an input_key")
        data, name = _read_image(image)
        body, ctype = _multipart({"operation": operation, "params": json.dumps(dict(params or {})),
                                  "webhook_url": webhook,
                                  "webhook_events": ",".join(webhook_events) if webhook_events else None},
                                 [("image", name, data)])
        _, _, out = self.request("POST", "/v1/jobs", body=body, content_type=ctype, headers=headers)
        return json.loads(out)

    def upload(self, image: ImageLike, content_type: str | None = None) -> str:
        """PUT an image straight to S3 through a presigned URL; returns the key for ``submit(input_key=)``."""
        data, _ = _read_image(image)
        ctype = content_type or _guess_type(data)
        ticket = self._json("POST", "/v1/uploads", {"content_type": ctype})
        req = urllib.request.Request(ticket["url"], data=data, method="PUT", headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the API's URL
                resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError("upload_failed", f"S3 refused the upload: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionFailed(f"PUT upload: {getattr(exc, 'reason', exc)}") from None
        return ticket["key"]

    def get(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def list(self, state: str | None = None, limit: int | None = None, cursor: str | None = None,
             review: bool | None = None) -> dict[str, Any]:
        """A page of this tenant's jobs; ``review=True``: only those marked for review."""
        query = {"state": state, "limit": limit, "cursor": cursor,
                 "review": None if review is None else str(review).lower()}
        return self._json("GET", "/v1/jobs", query=query)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def wait(self, job_id: str, timeout: float = 120.0, poll: float = 0.1, max_poll: float = 2.0) -> dict[str, Any]:
        """Poll until the job ends (delay grows x1.5 from ``poll`` up to ``max_poll``)."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            job = self.get(job_id)
            if job["state"] in TERMINAL:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeoutError(f"job {job_id} still {job['state']} after {timeout} s", job_id=job_id)
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, max_poll)

    def download(self, job_id: str, path: str | Path) -> Path:
        """Fetch a succeeded job's result into ``path``."""
        status, headers, _ = self.request("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/result")
        url = headers.get("Location") or headers.get("location")
        if status != 303 or not url:
            raise ApiError("unexpected_answer", f"expected a redirect to the result, got HTTP {status}")
        try:  # no Authorization header: the presigned URL carries its own signature
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - the API's URL
                data = resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionFailed(f"GET result: {getattr(exc, 'reason', exc)}") from None
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out

    # ---- batches ------------------------------------------------------------------------------
    def submit_batch(self, images: Iterable[ImageLike], operation: str = "remove",
                     params: Mapping[str, Any] | None = None, *, webhook: str | None = None,
                     webhook_events: list[str] | None = None) -> dict[str, Any]:
        files = []
        for i, image in enumerate(images):
            data, name = _read_image(image)
            files.append(("images", name if name != "image" else f"image{i}", data))
        body, ctype = _multipart({"operation": operation, "params": json.dumps(dict(params or {})),
                                  "webhook_url": webhook,
                                  "webhook_events": ",".join(webhook_events) if webhook_events else None}, files)
        _, _, out = self.request("POST", "/v1/batches", body=body, content_type=ctype)
        return json.loads(out)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/batches/{urllib.parse.quote(batch_id, safe='')}")

    # ---- health -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return json.loads(self.request("GET", "/healthz", auth=False)[2])

    def ready(self) -> dict[str, Any]:
        return json.loads(self.request("GET", "/readyz", auth=False)[2])


def _guess_type(data: bytes) -> str:
    """The content type to announce for an image's bytes (the server sniffs them again: an unknown
    format is announced as JPEG and refused when the job is made)."""
    from maskq.imaging import sniff_format, stored_format

    fmt = sniff_format(data)
    return stored_format(fmt)[1] if fmt else "image/jpeg"
