"""Headless Chromium from Debian's packages, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the Service points at ``/usr/bin/chromedriver`` (so Selenium Manager never
runs) and the browser binary is ``/usr/bin/chromium``. Every network request the page makes is read
back from Chromium's performance log (DevTools ``Network.requestWillBeSent`` events), and the
browser's console from its ``browser`` log.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("MASKQ_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MASKQ_CHROMEDRIVER", "/usr/bin/chromedriver")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--disable-dev-shm-usage", "--password-store=basic", "--use-mock-keychain"]


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (Path(path).is_file() and os.access(path, os.X_OK)) and shutil.which(path) is None:
            return f"{what} not found at {path} (Debian's chromium and chromium-driver packages)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is missing (the dev extra: pip install -e '.[dev]')"
    return None


def start(profile: Path, downloads: Path, width: int = 1280, height: int = 900):
    """A fresh headless Chromium (its own profile folder) that saves downloads in ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ARGS:
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False,
                                           "safebrowsing.enabled": False})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(60)
    return driver


class Recorder:
    """The requests a driver's page has made (drained from the performance log, kept across reads)."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.requests: list[dict] = []
        self.responses: dict[str, dict] = {}
        self.console: list[dict] = []

    def drain(self) -> Recorder:
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg.get("method") == "Network.requestWillBeSent":
                req = params["request"]
                self.requests.append({"id": params["requestId"], "url": req["url"], "method": req["method"],
                                      "headers": req.get("headers", {}), "type": params.get("type")})
            elif msg.get("method") == "Network.responseReceived":
                self.responses[params["requestId"]] = params["response"]
        self.console.extend(self.driver.get_log("browser"))
        return self

    def urls(self) -> list[str]:
        return [r["url"] for r in self.drain().requests]

    def foreign(self, origin: str) -> list[str]:
        """Every request to another origin than ``origin`` (blob: and data: URLs are the page's own)."""
        out = []
        for url in self.urls():
            parts = urlsplit(url)
            if parts.scheme in ("blob", "data"):
                continue
            if f"{parts.scheme}://{parts.netloc}" != origin:
                out.append(url)
        return out
