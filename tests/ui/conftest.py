"""The web page in a real browser against the real service: the API (uvicorn) over the session's
Redis and S3, a real Celery worker with the real model, and headless Chromium from Debian's packages
(:mod:`tests.ui.browser`). A failing test leaves a screenshot, the page's HTML, its console and the
requests it made in ``tests/.failures/ui-<test>/``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import KEY_A, ApiServer, api_factory  # noqa: F401 - the fixture is used here
from tests.imagecheck import FAILURES
from tests.ui import browser
from tests.worker.conftest import WorkerProcess

# 4 MiB: the sample photos (< 100 KB) pass, a 5 MB file gets the API's 413
MAX_REQUEST_BYTES = 4 * 1024 * 1024


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.fixture(scope="session")
def chromium() -> None:
    """Chromium and chromedriver present; skipped (with the reason) only where they cannot be installed."""
    reason = browser.unavailable()
    if reason is None:
        return
    if "selenium" in reason:
        pytest.fail(f"{reason}: `make install-dev` installs it", pytrace=False)
    if _can_install():
        pytest.fail(f"{reason}: `make install-system` installs them here (root, apt-get)", pytrace=False)
    pytest.skip(f"{reason}: cannot be installed here (not root, or no apt-get)")


@pytest.fixture(scope="module")
def served(api_factory, tmp_path_factory) -> Iterator[ApiServer]:  # noqa: F811 - pytest fixture injection
    """The API and one worker (the real model) for the module's tests."""
    server = api_factory(max_request_bytes=MAX_REQUEST_BYTES)
    worker = WorkerProcess(server.settings, tmp_path_factory.mktemp("ui-worker"), concurrency=1)
    worker.start()
    yield server
    worker.stop(timeout=10)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class Page:
    """One browser (a fresh profile: empty session storage) on the served API, and what it did."""

    def __init__(self, driver, server: ApiServer, downloads: Path) -> None:
        self.driver = driver
        self.server = server
        self.origin = server.url
        self.downloads = downloads
        self.recorder = browser.Recorder(driver)
        self.recorder.drain()  # the browser's own start-up (its new tab page) is not the page's doing
        self.recorder.requests.clear()

    def keep_failure(self, name: str) -> Path:
        folder = FAILURES / f"ui-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(folder / "page.png"))
        (folder / "page.html").write_text(self.driver.page_source)
        self.recorder.drain()
        (folder / "requests.txt").write_text("\n".join(f"{r['method']} {r['url']}" for r in self.recorder.requests))
        (folder / "console.txt").write_text("\n".join(str(c) for c in self.recorder.console))
        (folder / "api.log").write_text(self.server.log()[-20000:])
        return folder


@pytest.fixture
def page(chromium, served, tmp_path, request) -> Iterator[Page]:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser.start(tmp_path / "profile", downloads)
    p = Page(driver, served, downloads)
    try:
        yield p
    finally:
        report = getattr(request.node, "report_call", None)
        try:
            if report is not None and report.failed:
                folder = p.keep_failure(request.node.name)
                print(f"screenshot, page, console and requests kept in {folder}")
        finally:
            driver.quit()

