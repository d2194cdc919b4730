"""The page's routes on a live API process (no browser: tests/ui drives one): ``/`` redirects to
``/ui``, the files come from the package with a strict Content-Security-Policy, and
``GET /v1/jobs/{id}/result/content`` hands a job's result to its own tenant only."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest

from api.routes.ui import CSP
from maskq.service.records import JobStore
from maskq.service.storage import Storage
from tests.api.conftest import KEY_B, TENANT_A, png_bytes
from tests.api.test_api import auth, raw


@pytest.fixture(scope="module")
def store(api):
    s = JobStore.from_url(api.settings.redis_url)
    yield s
    s.r.close()


def csp(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for part in headers["content-security-policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


def test_root_redirects_to_the_page(api) -> None:
    status, headers, _ = raw(api, "GET", "/")
    assert status == 307 and headers["location"] == "/ui"


def test_the_page_and_its_files_carry_a_strict_csp(api) -> None:
    files = resources.files("api") / "ui"
    for path, name, media in (("/ui", "index.html", "text/html"), ("/ui/app.js", "app.js", "text/javascript"),
                              ("/ui/app.css", "app.css", "text/css")):
        status, headers, body = raw(api, "GET", path)
        assert status == 200, path
        assert body == (files / name).read_bytes()
        assert headers["content-type"].startswith(media)
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-cache"
        policy = csp(headers)
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'" and policy["connect-src"] == "'self'"
        assert policy["img-src"] == "'self' blob: data:" and policy["object-src"] == "'none'"
        assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
        assert policy["require-trusted-types-for"] == "'script'"
        assert "unsafe" not in headers["content-security-policy"] and "http" not in headers["content-security-policy"]
        # revalidation: the same ETag answers 304 without the body
        status, again, body = raw(api, "GET", path, headers={"If-None-Match": headers["etag"]})
        assert status == 304 and body == b"" and again["content-security-policy"] == CSP


def test_the_page_has_no_inline_script_or_style_and_names_no_other_origin() -> None:
    files = resources.files("api") / "ui"
    html = (files / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/ui/app.js" defer>']
    assert "<style" not in html
    assert not re.search(r"<[^>]+\son[a-z]+=", html)  # no inline event handler
    assert not re.search(r"<[^>]+\sstyle=", html)
    for name in ("index.html", "app.js", "app.css"):
        text = (files / name).read_text()
        assert not re.search(r"https?://(?!127\.0\.0\.1)", text), f"{name} names another origin"
        assert "innerHTML" not in text and "eval(" not in text
    total = sum(len((files / n).read_bytes()) for n in ("index.html", "app.js", "app.css"))
    assert total < 100_000, f"the page weighs {total} bytes"


def test_unknown_files_are_404_and_nothing_outside_the_folder_is_served(api) -> None:
    for path in ("/ui/nope.js", "/ui/index.html", "/ui/..%2Fmain.py", "/ui/%2E%2E/routes/ui.py"):
        status, headers, body = raw(api, "GET", path)
        assert status == 404, path
        assert body["error"]["code"] == "not_found"


def test_result_content_streams_the_result_to_its_tenant_only(api, store) -> None:
    c = api.client()
    job = c.submit(png_bytes(), "remove")
    storage = Storage.from_settings(api.settings)
    result = png_bytes(32, 24, seed=3)

    status, _, body = raw(api, "GET", f"/v1/jobs/{job['id']}/result/content", headers=auth())
    assert status == 409 and body["error"]["details"]["state"] == "queued"

    key = storage.put_result(TENANT_A, job["id"], result, extension="png", content_type="image/png")
    store.mark_running(job["id"])
    store.mark_succeeded(job["id"], key)
    status, headers, body = raw(api, "GET", f"/v1/jobs/{job['id']}/result/content", headers=auth())
    assert status == 200 and body == result
    assert headers["content-type"] == "image/png" and headers["content-length"] == str(len(result))
    assert headers["cache-control"] == "private, no-store"
    assert hashlib.sha256(body).digest() == hashlib.sha256(result).digest()

    assert raw(api, "GET", f"/v1/jobs/{job['id']}/result/content")[0] == 401
    assert raw(api, "GET", f"/v1/jobs/{job['id']}/result/content", headers=auth("wrong-key-0123456789"))[0] == 401
    status, _, body = raw(api, "GET", f"/v1/jobs/{job['id']}/result/content", headers=auth(KEY_B))
    assert status == 404 and body["error"]["code"] == "not_found"  # another tenant's: as if it did not exist
    assert raw(api, "GET", "/v1/jobs/no-such-job/result/content", headers=auth())[0] == 404
