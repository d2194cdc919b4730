"""Each endpoint against a live API process over real Redis and S3 (no worker: jobs stay queued,
and a test that needs another state moves the record with the real JobStore, as a worker would)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from maskq.errors import (
    BacklogFullError,
    ConflictError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    NotFoundError,
    UnauthorizedError,
    UnsupportedFormatError,
)
from maskq.local.client import Client
from maskq.service.records import JobStore
from tests.api.conftest import KEY_A, KEY_B, TENANT_A, png_bytes


def raw(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request with http.client: (status, headers, parsed JSON or bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed
    finally:
        conn.close()


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metrics(server) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def store(api):
    s = JobStore.from_url(api.settings.redis_url)
    yield s
    s.r.close()


# ---- create, read, list ------------------------------------------------------------------------

def test_create_multipart_then_get(api) -> None:
    c = api.client()
    job = c.submit(png_bytes(), "remove", {"format": "png"})
    assert job["state"] == "queued" and job["operation"] == "remove" and job["tenant"] == TENANT_A
    # the record names the model the job runs with: the service's default when the job names none
    assert job["params"] == {"format": "png", "model": "general"} and job["model"] == "general"
    assert job["error"] is None
    got = c.get(job["id"])
    assert got["id"] == job["id"] and got["state"] == "queued" and "result_url" not in got


def test_create_answers_202_with_location_and_request_id(api) -> None:
    c = api.client()
    body, ctype = __import__("maskq.local.client", fromlist=["_multipart"])._multipart(
        {"operation": "mask"}, [("image", "a.png", png_bytes())])
    status, headers, doc = raw(api, "POST", "/v1/jobs", body, {**auth(), "Content-Type": ctype,
                                                               "X-Request-ID": "req-test-42"})
    assert status == 202, doc
    assert headers["location"] == f"/v1/jobs/{doc['id']}"
    assert headers["x-request-id"] == "req-test-42"
    status, headers, _ = raw(api, "GET", headers["location"], headers=auth())
    assert status == 200 and len(headers["x-request-id"]) == 32  # generated when none is sent
    deadline = time.monotonic() + 5
    while "req-test-42" not in api.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(ln for ln in api.log().splitlines() if "req-test-42" in ln)
    assert doc["id"] in line and TENANT_A in line  # the access line carries request id, job id, tenant
    assert c.get(doc["id"])["operation"] == "mask"


def test_upload_then_create_from_key(api) -> None:
    c = api.client()
    key = c.upload(png_bytes(), "image/png")
    assert key.startswith(f"{TENANT_A}/") and key.endswith(".png")
    job = c.submit(input_key=key, operation="blur", params={"strength": 20})
    assert job["state"] == "queued" and job["params"] == {"strength": 20, "model": "general"}


def test_uploaded_key_checks(api) -> None:
    c = api.client()
    with pytest.raises(InvalidParameterError) as e:  # never PUT
        c.submit(input_key=f"{TENANT_A}/{uuid.uuid4().hex}/input/0.png", operation="mask")
    assert e.value.field == "input_key"
    other = api.client(KEY_B).upload(png_bytes())
    with pytest.raises(InvalidParameterError):  # another tenant's upload is not yours
        c.submit(input_key=other, operation="mask")
    not_image = c.upload(b"%PDF-1.4 not an image at all" * 4, "image/png")
    with pytest.raises(UnsupportedFormatError):
        c.submit(input_key=not_image, operation="mask")


def test_a_named_image_must_be_an_upload_of_the_same_tenant(api) -> None:
    """background_image and logo name uploads: a missing one, or another tenant's, is refused at submit
    (422 naming the field), before anything is stored or queued."""
    c = api.client()
    mine, theirs = c.upload(png_bytes(30, 30), "image/png"), api.client(KEY_B).upload(png_bytes(30, 30), "image/png")
    missing = f"{TENANT_A}/{uuid.uuid4().hex}/input.png"
    before = len(c.list(limit=100)["jobs"])
    for operation, params, field in (
        ("swap", {"background_image": missing}, "params.background_image"),
        ("swap", {"logo": theirs}, "params.logo"),
        ("swap", {"background_image": mine, "logo": "../../etc/passwd"}, "params.logo"),
        ("faceblur", {"background": "swap", "background_params": {"logo": theirs}},
         "params.background_params.logo"),
    ):
        with pytest.raises(InvalidParameterError) as e:
            c.submit(png_bytes(), operation, params)
        assert e.value.field == field, (params, e.value)
    assert len(c.list(limit=100)["jobs"]) == before  # nothing was queued
    job = c.submit(png_bytes(), "swap", {"background_image": mine, "logo": mine})
    assert job["state"] == "queued"


def test_list_newest_first_with_cursor_and_state(api, store) -> None:
    c = api.client(KEY_B)
    ids = [c.submit(png_bytes(seed=i), "mask")["id"] for i in range(5)]
    store.cancel_queued(ids[1])
    seen, cursor = [], None
    while True:
        page = c.list(limit=2, cursor=cursor)
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:5] == ids[::-1]
    canceled = c.list(state="canceled")["jobs"]
    assert [j["id"] for j in canceled] == [ids[1]]
    with pytest.raises(InvalidParameterError) as e:
        c.list(cursor="!!!not-a-cursor")
    assert e.value.field == "cursor"
    with pytest.raises(InvalidParameterError) as e:
        c.list(state="sleeping")
    assert e.value.field == "state"


def test_batch_counts_states(api, store) -> None:
    c = api.client()
    batch = c.submit_batch([png_bytes(seed=i) for i in range(3)], "remove", {"format": "png"})
    assert batch["total"] == 3 and batch["counts"]["queued"] == 3 and not batch["done"]
    jobs = [j["id"] for j in batch["jobs"]]
    store.mark_running(jobs[0])
    store.mark_succeeded(jobs[0], f"{TENANT_A}/{jobs[0]}/result.png")
    store.cancel_queued(jobs[1])
    got = c.get_batch(batch["id"])
    assert got["counts"] == {"queued": 1, "running": 0, "succeeded": 1, "failed": 0, "canceled": 1}
    store.cancel_queued(jobs[2])
    assert c.get_batch(batch["id"])["done"] is True
    with pytest.raises(NotFoundError):
        api.client(KEY_B).get_batch(batch["id"])
    key = c.upload(png_bytes())
    from_keys = c._json("POST", "/v1/batches", {"operation": "mask", "input_keys": [key, key]})
    assert from_keys["total"] == 2


def test_batch_refused_whole_when_one_image_is_bad(api) -> None:
    c = api.client(KEY_B)
    before = len(c.list(limit=200)["jobs"])
    with pytest.raises(UnsupportedFormatError):
        c.submit_batch([png_bytes(), b"GIF? no, plain text"], "mask")
    assert len(c.list(limit=200)["jobs"]) == before


# ---- auth and tenants --------------------------------------------------------------------------

def test_auth_required_and_keys_checked(api) -> None:
    status, headers, doc = raw(api, "GET", "/v1/jobs")
    assert status == 401 and doc["error"]["code"] == "unauthorized" and "bearer" in headers["www-authenticate"].lower()
    with pytest.raises(UnauthorizedError):
        Client(api.url, "key-acme-0123456780").list()
    with pytest.raises(UnauthorizedError):
        Client(api.url, "").list()


def test_other_tenant_gets_404_everywhere(api) -> None:
    job = api.client().submit(png_bytes(), "mask")
    b = api.client(KEY_B)
    for call in (lambda: b.get(job["id"]), lambda: b.cancel(job["id"]), lambda: b.download(job["id"], "/dev/null")):
        with pytest.raises(NotFoundError) as e:
            call()
        assert e.value.status == 404
    assert job["id"] not in [j["id"] for j in b.list(limit=200)["jobs"]]
    assert api.client().get(job["id"])["state"] == "queued"  # untouched


# ---- idempotency -------------------------------------------------------------------------------

def test_idempotency_key_returns_the_first_job(api) -> None:
    c = api.client()
    key = f"order-{uuid.uuid4().hex}"
    first = c.submit(png_bytes(seed=1), "remove", idempotency_key=key)
    again = c.submit(png_bytes(seed=1), "remove", idempotency_key=key)
    assert again["id"] == first["id"]
    with pytest.raises(ConflictError):  # the same key for another request
        c.submit(png_bytes(seed=1), "blur", idempotency_key=key)
    other_tenant = api.client(KEY_B).submit(png_bytes(seed=1), "remove", idempotency_key=key)
    assert other_tenant["id"] != first["id"]  # keys are per tenant
    enqueued = sum(v for (n, lb), v in metrics(api).items() if n == "maskq_jobs_enqueued_total")
    assert enqueued >= 2


# ---- cancel and result -------------------------------------------------------------------------

def test_cancel_queued_then_409_with_state(api, store) -> None:
    c = api.client()
    job = c.submit(png_bytes(), "mask")
    canceled = c.cancel(job["id"])
    assert canceled["state"] == "canceled" and canceled["finished_at"]
    with pytest.raises(ConflictError) as e:
        c.cancel(job["id"])
    assert e.value.status == 409 and e.value.details["state"] == "canceled"

    running = c.submit(png_bytes(), "mask")
    store.mark_running(running["id"])
    with pytest.raises(ConflictError) as e:
        c.cancel(running["id"])
    assert e.value.details["state"] == "running"
    assert c.get(running["id"])["state"] == "running"
    with pytest.raises(ConflictError) as e:  # no result while running
        c.download(running["id"], "/dev/null")
    assert e.value.details["state"] == "running"

    store.mark_failed(running["id"], "invalid_image", "broken")
    failed = c.get(running["id"])
    assert failed["state"] == "failed" and failed["error"] == {"code": "invalid_image", "message": "broken"}
    with pytest.raises(ConflictError) as e:
        c.cancel(running["id"])
    assert e.value.details["state"] == "failed"
    with pytest.raises(NotFoundError):
        c.cancel(uuid.uuid4().hex)


# ---- validation: 413, 415, 422 -----------------------------------------------------------------

def test_422_names_the_field(api) -> None:
    c = api.client()
    cases = [
        (("blur", {"strength": 1000}), "params.strength"),
        (("swap", {"background_color": "not-a-colour"}), "params.background_color"),
        (("mask", {"no_such_param": 1}), "params.no_such_param"),
        (("paint", {}), "operation"),
    ]
    for (op, params), field in cases:
        with pytest.raises(InvalidParameterError) as e:
            c.submit(png_bytes(), op, params)
        assert e.value.field == field and e.value.status == 422, (op, params, e.value.details)
    status, _, doc = raw(api, "POST", "/v1/jobs", json.dumps({"operation": "mask"}).encode(),
                         {**auth(), "Content-Type": "application/json"})
    assert status == 422 and doc["error"]["details"]["field"] == "input_key"
    with pytest.raises(InvalidParameterError) as e:
        c.submit(png_bytes(), "mask", webhook="ftp://example.org/hook")
    assert e.value.field == "webhook_url"
    with pytest.raises(InvalidParameterError) as e:
        c.submit(png_bytes(), "mask", webhook="http://127.0.0.1:9/h", webhook_events=["job.exploded"])
    assert e.value.field == "webhook_events"


@pytest.mark.parametrize("roi", ["1,2,3", "10,10,5,20", "a,b,c,d", "0,0,120%,50%", [1, 2, 3], "0 0 0 0"])
def test_a_bad_roi_is_422_naming_it(api, roi) -> None:
    c = api.client()
    with pytest.raises(InvalidParameterError) as e:
        c.submit(png_bytes(), "remove", {"roi": roi})
    assert e.value.field == "params.roi" and e.value.status == 422, e.value.details
    with pytest.raises(InvalidParameterError) as e:  # inside a face blur's background operation too
        c.submit(png_bytes(), "faceblur", {"background": "remove", "background_params": {"roi": roi}})
    assert e.value.status == 422 and "roi" in e.value.message


def test_415_for_unknown_content(api) -> None:
    c = api.client()
    for data in (b"hello, world", b"%PDF-1.7\n" + b"x" * 100, b"\x00" * 64):
        with pytest.raises(UnsupportedFormatError) as e:
            c.submit(data, "mask")
        assert e.value.status == 415
    status, _, doc = raw(api, "POST", "/v1/jobs", b"operation=mask", {**auth(), "Content-Type": "text/plain"})
    assert status == 415 and doc["error"]["code"] == "unsupported_format"
    with pytest.raises(InvalidImageError):  # a PNG signature with a broken header: 422 invalid_image
        c.submit(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "mask")


@pytest.fixture(scope="module")
def strict(api_factory):
    """A server with tight limits: small bodies and images, a backlog of 3, private webhooks refused."""
    return api_factory(max_request_bytes=200_000, max_pixels=10_000, backlog_limit=3, backlog_cache_seconds=0,
                       backlog_retry_after_seconds=7, webhook_allow_private=False)


def test_413_on_content_length_before_reading(strict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=10)
    try:  # announce 1 GB and send nothing: the answer comes at once
        conn.putrequest("POST", "/v1/jobs")
        headers = {**auth(), "Content-Type": "multipart/form-data; boundary=x", "Content-Length": "1000000000"}
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        t0 = time.monotonic()
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 413 and doc["error"]["code"] == "image_too_large"
    assert time.monotonic() - t0 < 5


def test_413_on_a_streamed_body_past_the_limit(strict) -> None:
    sent = 0

    def chunks():
        nonlocal sent
        yield b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(100):  # 6.4 MB, no Content-Length (chunked)
            sent += 65536
            yield b"\x89PNG" + b"\x00" * 65532

    conn = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=20)
    try:
        conn.putrequest("POST", "/v1/jobs")
        for k, v in {**auth(), "Content-Type": "multipart/form-data; boundary=x",
                     "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            for c in chunks():
                conn.send(f"{len(c):x}\r\n".encode() + c + b"\r\n")
        except OSError:  # the server answered and closed: it did not read the rest
            pass
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 413 and doc["error"]["code"] == "image_too_large"


def test_413_for_too_many_pixels(strict) -> None:
    with pytest.raises(ImageTooLargeError) as e:
        strict.client().submit(png_bytes(200, 100), "mask")  # 20,000 px > 10,000
    assert e.value.status == 413


def test_private_webhooks_refused_unless_allowed(strict) -> None:
    c = strict.client(KEY_B)
    for url in ("http://127.0.0.1:8080/h", "http://localhost/h", "http://[::1]/h", "http://10.1.2.3/h",
                "http://169.254.169.254/latest/meta-data", "http://192.168.0.1/h", "file:///etc/passwd",
                "http://user:pw@203.0.113.9/h"):
        with pytest.raises(InvalidParameterError) as e:
            c.submit(png_bytes(16, 16), "mask", webhook=url)
        assert e.value.field == "webhook_url", url


def test_backpressure_429_with_retry_after(strict) -> None:
    c = strict.client()
    status, _, _ = raw(strict, "GET", "/readyz")
    assert status == 200
    accepted = 0
    with pytest.raises(BacklogFullError) as e:
        for i in range(10):
            c.submit(png_bytes(16, 16, seed=i), "mask")
            accepted += 1
    assert accepted == 3  # the backlog limit
    assert e.value.status == 429 and e.value.retry_after == 7
    status, headers, doc = raw(strict, "POST", "/v1/jobs", b"{}", {**auth(), "Content-Type": "application/json"})
    assert status == 429 and headers["retry-after"] == "7" and doc["error"]["code"] == "backlog_full"
    m = metrics(strict)
    assert m[("maskq_queue_backlog_jobs", (("queue", "cpu"),))] == 3
    assert m[("maskq_http_rejections_total", (("reason", "429"),))] >= 2
    assert m[("maskq_http_rejections_total", (("reason", "413"),))] >= 1
    # a queued job canceled and taken from the queue by a worker would free room; here the record
    # moves as a worker would move it, and the queue's list is what counts: still full
    assert m[("maskq_http_requests_total", (("method", "POST"), ("route", "/v1/jobs"), ("status", "202")))] == 3


# ---- health, metrics, schema -------------------------------------------------------------------

def test_health_ready_metrics_and_schema(api) -> None:
    assert api.client().health()["status"] == "ok"
    ready = api.client().ready()
    assert ready == {"status": "ok", "checks": {"redis": "ok", "s3": "ok"}}
    api.client().get_batch  # noqa: B018
    raw(api, "GET", "/v1/jobs/" + uuid.uuid4().hex, headers=auth())
    m = metrics(api)
    assert m[("maskq_http_requests_total", (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")))] >= 1
    assert any(n == "maskq_http_request_duration_seconds_bucket" for n, _ in m)
    assert ("maskq_queue_backlog_jobs", (("queue", "gpu"),)) in m
    schema = json.loads(urllib.request.urlopen(api.url + "/openapi.json", timeout=10).read())
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/uploads", "/v1/batches",
                 "/v1/batches/{batch_id}", "/healthz", "/readyz"):
        assert path in schema["paths"], path
    ops = json.loads(urllib.request.urlopen(api.url + "/v1/operations", timeout=10).read())
    assert {"mask", "remove", "swap", "blur", "crop"} <= set(ops)
    # every operation that needs a matte lists the models it can run with
    for op in ("mask", "remove", "swap", "blur", "crop"):
        enum = [t.get("enum") for t in ops[op]["properties"]["model"]["anyOf"] if t.get("enum")]
        assert enum == [["general", "pets"]], (op, ops[op]["properties"]["model"])
    models = json.loads(urllib.request.urlopen(api.url + "/v1/models", timeout=10).read())
    assert models["default"] == "general" and [m["name"] for m in models["models"]] == ["general", "pets"]
    assert all(m["input_size"] > 0 and m["precisions"] == ["fp32", "int8"] for m in models["models"])
    status, _, doc = raw(api, "GET", "/nope")
    assert status == 404 and doc["error"]["code"] == "not_found"


def test_idempotency_holds_under_concurrent_retries(api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = f"race-{uuid.uuid4().hex}"
    before = sum(v for (n, _), v in metrics(api).items() if n == "maskq_jobs_enqueued_total")
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: api.client().submit(png_bytes(seed=3), "mask", idempotency_key=key)["id"],
                            range(8)))
    assert len(set(ids)) == 1
    after = sum(v for (n, _), v in metrics(api).items() if n == "maskq_jobs_enqueued_total")
    assert after - before == 1  # queued once


def test_redis_down_is_503_and_not_ready(api_factory) -> None:
    from maskq.errors import StorageUnavailableError
    from maskq.local.embedded import free_port

    dead = api_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    status, _, doc = raw(dead, "GET", "/readyz")
    assert status == 503 and doc["checks"]["redis"].startswith("unavailable") and doc["checks"]["s3"] == "ok"
    with pytest.raises(StorageUnavailableError) as e:
        dead.client().submit(png_bytes(), "mask")
    assert e.value.status == 503
    m = metrics(dead)
    assert m[("maskq_backlog_redis_up", ())] == 0
    assert not any(n == "maskq_queue_backlog_jobs" for n, _ in m)  # absent, not a false 0


def test_unknown_model_is_refused_and_pets_stays_selectable(api) -> None:
    c = api.client()
    body = json.dumps({"operation": "remove", "input_key": f"{TENANT_A}/x.png", "params": {"model": "u2net"}})
    status, _, doc = raw(api, "POST", "/v1/jobs", body.encode(), {**auth(), "Content-Type": "application/json"})
    assert status == 422 and doc["error"]["code"] == "invalid_parameter"
    assert doc["error"]["details"]["field"] == "params.model"
    job = c.submit(png_bytes(), "remove", {"model": "pets"})
    assert job["params"]["model"] == "pets" and job["model"] == "pets"
