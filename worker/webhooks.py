"""Webhook delivery, signed per Standard Webhooks (https://www.standardwebhooks.com).

Headers: ``webhook-id`` (stable for one event across retries, so receivers can deduplicate),
``webhook-timestamp`` (seconds, set per attempt: receivers reject stale ones to stop replays) and
``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where the key
is the base64 part of the ``whsec_...`` secret. The signing and verifying functions are pure; only
:func:`post` touches the network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import urllib3

from maskq.errors import InvalidParameterError, MaskqError

SECRET_PREFIX = "whsec_"
# receivers should refuse timestamps further than this from their clock (replay protection)
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookDeliveryError(MaskqError):
    """The receiver did not take the event (connection error, timeout, non-2xx): retry later."""

    code = "webhook_failed"
    transient = True


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        raise InvalidParameterError("webhook secret must be 'whsec_' followed by base64",
                                    field="webhook_secret") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> bool:
    """What a receiver does: check the timestamp window and any of the space-separated v1 signatures."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts = h["webhook-id"], int(h["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for candidate in h.get("webhook-signature", "").split():
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def event_id(job_id: str, state: str) -> str:
    """One id per (job, final state): the same on every retry of the same event."""
    return f"msg_{job_id}_{state}"


def payload(job_doc: Mapping[str, Any]) -> bytes:
    """The event body: ``{"type": "job.<state>", "timestamp": ..., "data": <job document>}``."""
    body = {"type": f"job.{job_doc['state']}", "timestamp": job_doc.get("finished_at"), "data": dict(job_doc)}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def headers_for(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": "maskq-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def check_url(url: str) -> str:
    """Only http(s) URLs with a host; anything else is the caller's mistake, not worth retrying."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameterError(f"webhook URL must be http(s) with a host: {url!r}", field="webhook_url")
    return url


_HTTP = urllib3.PoolManager(retries=False, maxsize=4)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST once; returns the status of a 2xx answer, raises WebhookDeliveryError otherwise."""
    check_url(url)
    try:
        resp = _HTTP.request("POST", url, body=body, headers=dict(headers), redirect=False,
                             timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout), preload_content=True)
    except urllib3.exceptions.HTTPError as exc:
        raise WebhookDeliveryError(f"webhook POST to {url} failed: {exc}") from exc
    if not 200 <= resp.status < 300:
        raise WebhookDeliveryError(f"webhook receiver answered {resp.status}", status=resp.status)
    return resp.status
