"""Webhook delivery, signed per Standard Webhooks (https://www.standardwebhooks.com).

Headers: ``webhook-id`` (stable for one event across retries, so receivers can deduplicate),
``webhook-timestamp`` (seconds, set per attempt: receivers reject stale ones to stop replays) and
``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where the key
is the base64 part of the ``whsec_...`` secret. The signing and verifying functions are pure; only
:func:`post` touches the network, and only addresses it resolved and checked itself
(:mod:`maskq.service.webhook_address`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import urllib3

from maskq.errors import InvalidParameterError, MaskqError
from maskq.service import webhook_address
from worker import metrics

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# receivers should refuse timestamps further than this from their clock (replay protection)
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookDeliveryError(MaskqError):
    """The receiver did not take the event (connection error, timeout, non-2xx): retry later."""

    code = "webhook_failed"


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
    """The URL's shape (http(s), a host, no credentials); anything else is the caller's mistake, not
    worth retrying. Addresses are checked by :func:`post`, at each attempt."""
    webhook_address.parse(url)
    return url


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float, *, allow_private: bool = False,
         resolver: webhook_address.Resolver = webhook_address.system_resolver) -> int:
    """POST once; returns the status of a 2xx answer.

    The host is resolved here, every address checked (:func:`maskq.service.webhook_address.checked_addresses`),
    and the request goes to one of those checked addresses itself, with the URL's ``Host`` header
    (and, for https, the URL's name for SNI and certificate verification): nothing resolves the name
    a second time, so an answer that changed since submit (DNS rebinding to 127.0.0.1 or
    169.254.169.254) is the answer judged. A further address is tried only when connecting to one
    fails (nothing was sent), within ``timeout``. No redirects: a 3xx is a failed delivery.

    Raises :class:`WebhookDeliveryError` (retried with backoff) when the receiver does not take the
    event, or the host has no DNS answer now; :class:`InvalidParameterError` (not retried) when the
    URL can never be delivered to: a bad shape, or :class:`WebhookAddressRefusedError` when the host
    resolves to a refused address now. Such a refusal is counted
    (``maskq_webhook_deliveries_total{outcome="refused_address"}``) and logged with the host and the
    address (the task's log context adds the job id).

    Why a refusal is not retried, although a DNS answer may change back: the answer belongs to
    whoever controls the name, so retrying would let them choose when the worker calls, and a real
    receiver does not resolve to the cluster's inside - a transient inside answer is a
    misconfiguration that retries within minutes would rarely outlive. The event is not lost: the
    job's state stays readable with ``GET /v1/jobs/{id}``, and the refusal is in the metric and log.
    ``allow_private`` (``MASKQ_WEBHOOK_ALLOW_PRIVATE``, local development only) skips the address
    policy, not the resolution: delivery still connects to the address it resolved.
    """
    try:
        target = webhook_address.parse(url)
        addresses = webhook_address.checked_addresses(target, allow_private=allow_private, resolver=resolver)
    except webhook_address.WebhookHostUnresolvedError as exc:
        _count("unresolved")
        raise WebhookDeliveryError(f"webhook not sent: {exc}") from exc
    except webhook_address.WebhookAddressRefusedError as exc:
        _count("refused_address")
        log.warning("webhook not sent: %s resolves to %s (%s) at delivery", exc.details["host"],
                    exc.details["address"], exc.details["reason"],
                    extra={"webhook_host": exc.details["host"], "refused_address": exc.details["address"],
                           "reason": exc.details["reason"]})
        raise
    except InvalidParameterError:
        _count("invalid_url")
        raise
    deadline = time.monotonic() + timeout
    for i, address in enumerate(addresses):
        try:
            status = _post_to(target, address, body, headers, timeout)
            break
        except urllib3.exceptions.ConnectTimeoutError as exc:  # NewConnectionError too: nothing was sent
            if i + 1 < len(addresses) and time.monotonic() < deadline:
                continue
            _count("failed")
            raise WebhookDeliveryError(f"webhook POST to {url} failed: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            _count("failed")
            raise WebhookDeliveryError(f"webhook POST to {url} failed: {exc}") from exc
    if not 200 <= status < 300:
        _count("failed")
        raise WebhookDeliveryError(f"webhook receiver answered {status}", status=status)
    _count("delivered")
    return status


def _post_to(target: webhook_address.WebhookTarget, address: str, body: bytes, headers: Mapping[str, str],
             timeout: float) -> int:
    """One POST to ``address`` (already checked) for ``target``'s URL. A pool per attempt: webhooks are
    few and a pool per (address, name) kept for reuse would be a cache to bound and expire."""
    opts: dict[str, Any] = {"timeout": urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
                            "retries": False, "maxsize": 1}
    pool: urllib3.HTTPConnectionPool
    if target.is_https:  # TLS verifies the URL's name, not the address
        pool = urllib3.HTTPSConnectionPool(address, target.port, server_hostname=target.host,
                                           assert_hostname=target.host, **opts)
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, **opts)
    try:
        resp = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                            redirect=False, assert_same_host=False, preload_content=True)
        return resp.status
    finally:
        pool.close()


def _count(outcome: str) -> None:
    metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
