"""End to end: the API, a real Celery worker with the real model, real Redis and S3, and a real HTTP
receiver for webhooks. submit -> succeeded -> download the PNG."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from maskq.errors import ConflictError
from tests.api.conftest import KEY_B, png_bytes
from tests.worker.conftest import needs_model
from worker.webhooks import verify

pytestmark = [needs_model, pytest.mark.slow]


class Receiver:
    """A webhook receiver on a free loopback port that records every POST (headers, body)."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.events.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 60.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def served(api_factory):
    return api_factory()


def test_submit_wait_download_with_signed_webhook(served, worker_for, receiver, tmp_path) -> None:
    worker_for(served, concurrency=1)
    c = served.client()
    job = c.submit(png_bytes(64, 48), "remove", {"format": "png"}, webhook=receiver.url)
    done = c.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert done["result_url"].startswith("http://127.0.0.1:") and done["attempts"] == 1
    out = c.download(job["id"], tmp_path / "cut.png")
    img = Image.open(io.BytesIO(out.read_bytes()))
    assert img.format == "PNG" and img.size == (64, 48) and img.mode == "RGBA"
    with pytest.raises(ConflictError) as e:
        c.cancel(job["id"])
    assert e.value.details["state"] == "succeeded"

    events = receiver.wait_for(1)
    assert events, "no webhook arrived"
    headers, body = events[0]
    assert verify(served.settings.webhook_secret, headers, body)  # Standard Webhooks signature
    assert not verify(served.settings.webhook_secret, headers, body.replace(b"succeeded", b"failed"))
    event = json.loads(body)
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"]
    # the payload is the job document: the mask's confidence and the review flag included
    assert event["data"]["confidence"] == done["confidence"] and 0 <= done["confidence"] <= 1
    assert event["data"]["review"] is done["review"] and isinstance(done["review"], bool)
    assert headers["webhook-id"] == f"msg_{job['id']}_succeeded"


def test_review_listing_holds_exactly_the_flagged_jobs(api_factory, worker_for) -> None:
    server = api_factory()  # a Redis database of its own: nothing else in this tenant's listings
    worker_for(server, concurrency=1)
    c = server.client()
    flagged = c.submit(png_bytes(64, 48), "remove", {"review_below": 1.0})
    clean = c.submit(png_bytes(64, 48), "remove", {"review_below": 0.0})
    roi = c.submit(png_bytes(64, 48), "mask", {"roi": "0,0,50%,100%", "review_below": 0.0})
    outside = c.submit(png_bytes(64, 48), "mask", {"roi": "100,0,200,48"})  # well formed, outside 64x48
    done = {j["id"]: c.wait(j["id"], timeout=120) for j in (flagged, clean, roi, outside)}
    assert done[flagged["id"]]["review"] is True and done[clean["id"]]["review"] is False
    assert done[roi["id"]]["state"] == "succeeded" and done[roi["id"]]["confidence"] is not None
    err = done[outside["id"]]["error"]
    assert done[outside["id"]]["state"] == "failed" and err["code"] == "invalid_parameter" and "roi" in err["message"]
    page = c.list(review=True)
    assert [j["id"] for j in page["jobs"]] == [flagged["id"]] and page["next_cursor"] is None
    assert page["jobs"][0]["review"] is True and page["jobs"][0]["result_url"]
    others = {j["id"] for j in c.list(review=False)["jobs"]}
    assert flagged["id"] not in others and clean["id"] in others
    assert server.client(KEY_B).list(review=True)["jobs"] == []  # another tenant sees none of them


def test_batch_and_bad_input_end_to_end(served, worker_for) -> None:
    worker_for(served, concurrency=1)
    c = served.client()
    batch = c.submit_batch([png_bytes(48, 32, seed=i) for i in range(2)], "mask")
    truncated = png_bytes(64, 48)[:60]  # a PNG header, then nothing: fails in the worker, not the API
    bad = c.submit(truncated, "mask")
    deadline = time.monotonic() + 120
    while not c.get_batch(batch["id"])["done"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert c.get_batch(batch["id"])["counts"]["succeeded"] == 2
    failed = c.wait(bad["id"], timeout=60)
    assert failed["state"] == "failed" and failed["error"]["code"] == "invalid_image"


def test_cancel_queued_sends_canceled_webhook_and_worker_skips(served, worker_for, receiver) -> None:
    c = served.client()
    job = c.submit(png_bytes(), "mask", webhook=receiver.url, webhook_events=["job.canceled"])
    assert c.cancel(job["id"])["state"] == "canceled"
    worker_for(served, concurrency=1)  # the revoked message must not bring the job back
    headers, body = receiver.wait_for(1)[0]
    event = json.loads(body)
    assert event["type"] == "job.canceled"
    assert verify(served.settings.webhook_secret, headers, body)
    time.sleep(1.0)
    assert c.get(job["id"])["state"] == "canceled"
    # the webhook carries the document GET answers with; the cancel is counted like any other end
    assert event["data"] == c.get(job["id"])
    metrics = urllib.request.urlopen(f"{served.url}/metrics", timeout=5).read().decode()
    canceled = [line for line in metrics.splitlines()
                if line.startswith("maskq_jobs_finished_total{") and 'state="canceled"' in line]
    assert canceled and float(canceled[0].split()[-1]) >= 1.0, canceled
