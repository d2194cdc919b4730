"""The page at /ui in headless Chromium against the real service (API, worker with the real model,
Redis, S3): a person's first minutes with it, the errors they may meet, and what the page may not do
(talk to another origin, weigh more than 100 KB, break its Content-Security-Policy)."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from maskq import defaults
from tests.api.conftest import KEY_A
from tests.ui.conftest import MAX_REQUEST_BYTES
from tests.worker.conftest import needs_model

pytestmark = [needs_model, pytest.mark.slow]

SAMPLES = defaults.REPO_ROOT / "samples"
PHOTOS = [SAMPLES / "chelsea.jpg", SAMPLES / "coffee.jpg"]
BLUE = "#3366cc"
JOB_TIMEOUT = 120.0  # two photos on a loaded 2-core machine
PAGE_BUDGET_BYTES = 100_000


def wait_for(page, condition, timeout: float = 30.0, what: str = "the page"):
    """Poll ``condition(driver)`` until truthy; its value, or AssertionError naming ``what``."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(page.driver, timeout, poll_frequency=0.2).until(condition)
    except Exception as exc:  # TimeoutException: say what we were waiting for
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from exc


def by_id(page, id_: str):
    from selenium.webdriver.common.by import By

    return page.driver.find_element(By.ID, id_)


def enter_key(page, key: str = KEY_A) -> None:
    """Open the printed URL (``/``), type the key and press Enter, as a person would."""
    page.driver.get(page.origin + "/")
    field = wait_for(page, lambda d: by_id(page, "key-input"), what="the key field")
    assert page.driver.switch_to.active_element == field  # focused: no click needed
    field.send_keys(key + "\n")


def drop(page, paths: list[Path]) -> None:
    """Drop files on the drop zone: a DragEvent carrying a DataTransfer with the files' real bytes.
    (WebDriver cannot drive the operating system's drag and drop; the page's own drop handler runs.)"""
    files = [{"name": p.name, "type": "image/jpeg" if p.suffix == ".jpg" else "image/png",
              "b64": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    page.driver.execute_script("""
        const dt = new DataTransfer();
        for (const f of arguments[0]) {
          const bin = atob(f.b64), bytes = new Uint8Array(bin.length);
          for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
          dt.items.add(new File([bytes], f.name, {type: f.type}));
        }
        const zone = document.getElementById("drop");
        for (const type of ["dragenter", "dragover", "drop"])
          zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
    """, files)


def choose_files(page, *paths: Path) -> None:
    """The file picker: ChromeDriver adds to a ``multiple`` input's files, so it is emptied first."""
    field = by_id(page, "files")
    page.driver.execute_script("arguments[0].value = '';", field)
    field.send_keys("\n".join(str(p) for p in paths))


def choose_operation(page, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    wait_for(page, lambda d: by_id(page, "operation").find_elements("css selector", f"option[value='{name}']"),
             what="the operations from /v1/operations")
    Select(by_id(page, "operation")).select_by_value(name)


def cards(page) -> list:
    from selenium.webdriver.common.by import By

    return page.driver.find_elements(By.CSS_SELECTOR, "#results li.result")


def wait_finished(page, n: int) -> list[str]:
    def done(_):
        states = [c.get_attribute("data-state") for c in cards(page)]
        return states if len(states) == n and all(s in ("succeeded", "failed", "canceled") for s in states) else None

    return wait_for(page, done, JOB_TIMEOUT, f"{n} job(s) to finish")


def wait_download(folder: Path, name: str, timeout: float = 30.0) -> Path:
    path = folder / name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded into {folder}: {sorted(p.name for p in folder.iterdir())}")


def page_weight(page) -> dict[str, int]:
    """Bytes (uncompressed) of the document and every file it loaded from /ui, as the browser counts them."""
    entries = page.driver.execute_script("""
        return [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
          .map(e => [e.name, e.decodedBodySize]);""")
    return {urlsplit(url).path: size for url, size in entries
            if urlsplit(url).scheme == "http" and urlsplit(url).path.startswith("/ui")}


def csp_problems(page) -> list[str]:
    page.recorder.drain()
    return [c["message"] for c in page.recorder.console
            if "Content Security Policy" in c["message"] or "TrustedHTML" in c["message"]
            or "Trusted Type" in c["message"]]


def test_two_dropped_photos_swapped_on_a_colour_shown_and_downloaded(page) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    enter_key(page)
    wait_for(page, lambda d: by_id(page, "try-view").is_displayed(), what="the key to be accepted")
    assert page.driver.current_url == page.origin + "/ui"
    assert page.driver.execute_script("return sessionStorage.getItem('maskq.apiKey')") == KEY_A

    drop(page, PHOTOS)
    assert "2 photos" in by_id(page, "chosen").text
    choose_operation(page, "swap")
    colour = wait_for(page, lambda d: by_id(page, "param-background_color"), what="the swap form")
    assert colour.get_attribute("type") == "color" and colour.get_attribute("value") == "#ffffff"  # its default
    # the native colour dialog cannot be driven; set the picker's value as the dialog would
    page.driver.execute_script("""const i = arguments[0]; i.value = arguments[1];
        i.dispatchEvent(new Event("input", {bubbles: true})); i.dispatchEvent(new Event("change", {bubbles: true}));""",
                               colour, BLUE)
    assert by_id(page, "param-margin").get_attribute("type") == "range"  # a slider, at its default
    assert by_id(page, "param-margin").get_attribute("value") == "0.05"
    assert by_id(page, "param-position").tag_name == "select"  # an enum
    unlabelled = page.driver.execute_script("""return [...document.querySelectorAll("input, select, textarea, button")]
        .filter(e => e.offsetParent !== null && !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
                && !(e.textContent || "").trim()).map(e => e.id || e.outerHTML.slice(0, 80));""")
    assert unlabelled == [], "controls a screen reader cannot name"
    by_id(page, "submit").click()

    t0 = time.monotonic()
    states = wait_finished(page, 2)
    took = time.monotonic() - t0
    assert states == ["succeeded", "succeeded"], [c.text for c in cards(page)]
    print(f"two swap jobs succeeded {took:.1f} s after Start")

    client = page.server.client()
    by_name = {}
    for card in cards(page):
        name = card.get_attribute("aria-label")
        job = client.get(card.get_attribute("data-job"))
        assert job["operation"] == "swap" and job["params"] == {"background_color": BLUE, "model": "general"}, job
        imgs = wait_for(page, lambda d, c=card: [i for i in c.find_elements(By.CSS_SELECTOR, ".compare img")
                                                 if d.execute_script("return arguments[0].complete && "
                                                                     "arguments[0].naturalWidth > 0", i)] or None,
                        what=f"{name}'s images")
        assert len(imgs) == 2, f"{name}: before and after expected"
        by_name[name] = card

    # the result of coffee.jpg: a JPEG (auto format: opaque result of a JPEG) of the photo's size, on blue
    card = by_name["coffee.jpg"]
    link = card.find_element(By.CSS_SELECTOR, "a.download")
    assert link.get_attribute("download") == "coffee-swap.jpg" and link.get_attribute("href").startswith("blob:")
    link.click()
    path = wait_download(page.downloads, "coffee-swap.jpg")
    img = Image.open(io.BytesIO(path.read_bytes()))
    img.load()
    assert img.format == "JPEG" and img.size == Image.open(SAMPLES / "coffee.jpg").size == (600, 400)
    rgb = img.convert("RGB")
    pixels = np.asarray(rgb, np.int16).reshape(-1, 3)
    blue = int((np.abs(pixels - (0x33, 0x66, 0xCC)).sum(axis=1) < 60).sum())
    assert blue > 0.2 * img.width * img.height, f"only {blue} blue pixels: was the colour sent?"

    # the before/after slider moves with the keyboard
    slider = card.find_element(By.CSS_SELECTOR, ".actions input[type=range]")
    figure = card.find_element(By.CSS_SELECTOR, ".compare")
    slider.send_keys(Keys.END)
    assert page.driver.execute_script("return arguments[0].style.getPropertyValue('--pos')", figure) == "100%"

    # nothing left this origin; the key travelled only in Authorization headers, never in a URL
    assert page.recorder.foreign(page.origin) == []
    for r in page.recorder.requests:
        assert KEY_A not in r["url"]
        path_ = urlsplit(r["url"]).path
        if path_.startswith("/v1/") and path_ not in ("/v1/operations", "/v1/models"):
            assert r["headers"].get("Authorization") == f"Bearer {KEY_A}", r
        elif r["url"].startswith("http"):
            assert "Authorization" not in r["headers"], r
    paths = {urlsplit(u).path for u in page.recorder.urls()}
    assert {"/ui", "/ui/app.js", "/ui/app.css", "/v1/operations", "/v1/batches"} <= paths

    weight = page_weight(page)
    print(f"page weight: {sum(weight.values())} bytes {weight}")
    assert set(weight) == {"/ui", "/ui/app.js", "/ui/app.css"}, weight
    assert 0 < sum(weight.values()) < PAGE_BUDGET_BYTES
    assert csp_problems(page) == []
    assert not by_id(page, "banner").is_displayed()  # this server has no /v1/models: no fuss about it


def test_a_bad_key_is_refused_with_a_message(page) -> None:
    enter_key(page, "not-a-key-0123456789")
    error = wait_for(page, lambda d: by_id(page, "key-error").is_displayed() and by_id(page, "key-error"),
                     what="the bad key's message")
    assert "refused" in error.text and "401" in error.text, error.text
    assert by_id(page, "key-view").is_displayed() and not by_id(page, "try-view").is_displayed()
    assert page.driver.execute_script("return sessionStorage.getItem('maskq.apiKey')") is None
    assert "{" not in error.text  # a sentence, not the JSON body
    assert page.recorder.foreign(page.origin) == []


def test_corrupt_files_show_invalid_image(page, tmp_path) -> None:
    enter_key(page)
    choose_operation(page, "remove")
    # a truncated JPEG: its header passes the API's check, the worker cannot decode it -> failed job
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((SAMPLES / "chelsea.jpg").read_bytes()[:4000])
    choose_files(page, truncated)
    by_id(page, "submit").click()
    assert wait_finished(page, 1) == ["failed"]
    text = cards(page)[0].text
    assert "invalid_image" in text and "truncated" in text, text

    # a PNG whose header is broken: the API refuses it at once (422), the form says so
    broken = tmp_path / "broken.png"
    data = (SAMPLES / "logo.png").read_bytes()
    broken.write_bytes(data[:16] + b"\xff" * 20 + data[36:])
    choose_files(page, broken)
    by_id(page, "submit").click()
    error = wait_for(page, lambda d: by_id(page, "form-error").is_displayed() and by_id(page, "form-error"),
                     what="the form's error")
    assert "invalid_image" in error.text and "{" not in error.text, error.text
    assert len(cards(page)) == 1  # nothing was queued for it
    assert page.recorder.foreign(page.origin) == []


def test_too_large_and_invalid_parameter_are_readable(page, tmp_path) -> None:
    enter_key(page)
    choose_operation(page, "swap")
    big = tmp_path / "big.jpg"
    big.write_bytes((SAMPLES / "chelsea.jpg").read_bytes() + b"\0" * (5 * 1024 * 1024))
    choose_files(page, big)
    by_id(page, "submit").click()
    error = wait_for(page, lambda d: by_id(page, "form-error").is_displayed() and by_id(page, "form-error"),
                     what="the 413 message")
    assert "Too large (413 image_too_large)" in error.text, error.text

    choose_files(page, PHOTOS[0])
    width = by_id(page, "param-canvas_width")
    width.send_keys("0")  # the schema says 1..10000; the server names the field
    by_id(page, "submit").click()
    wait_for(page, lambda d: "canvas_width" in by_id(page, "form-error").text, what="the invalid_parameter message")
    assert "invalid_parameter" in by_id(page, "form-error").text
    assert width.get_attribute("aria-invalid") == "true"
    assert by_id(page, "param-canvas_width-error").is_displayed()
    assert page.driver.switch_to.active_element == width  # focus on the field to fix
    assert cards(page) == []


def test_jobs_view_lists_recent_jobs_health_and_backlog_on_a_phone(page) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    client = page.server.client()
    job = client.wait(client.submit(PHOTOS[1], "remove", {"review_below": 0.0})["id"], timeout=JOB_TIMEOUT)
    flagged = client.wait(client.submit(PHOTOS[0], "remove", {"review_below": 1.0})["id"], timeout=JOB_TIMEOUT)
    assert job["state"] == flagged["state"] == "succeeded" and flagged["review"] and not job["review"]
    # a phone's viewport (a headless window is at least 500 px wide; the emulation goes below)
    page.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    enter_key(page)
    wait_for(page, lambda d: by_id(page, "try-view").is_displayed(), what="the key to be accepted")
    assert not page.driver.execute_script("return document.getElementById('params-box').open")  # folded on a phone
    by_id(page, "nav-jobs").click()
    row = wait_for(page, lambda d: d.find_elements(By.CSS_SELECTOR, f"#jobs-table tr[data-job='{job['id']}']"),
                   what="the job in the list")[0]
    assert "remove" in row.text and "succeeded" in row.text and f"confidence {job['confidence']:.2f}" in row.text
    assert "review" not in row.text
    flagged_row = page.driver.find_element(By.CSS_SELECTOR, f"#jobs-table tr[data-job='{flagged['id']}']")
    assert "review" in flagged_row.text
    health = wait_for(page, lambda d: "Queue cpu" in by_id(page, "health").text and by_id(page, "health"),
                      what="the health and backlog")
    assert "Ready" in health.text and "yes" in health.text and "taken by workers" in health.text, health.text
    assert page.driver.execute_script("return window.innerWidth") == 390
    assert page.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")

    # the review filter: GET /v1/jobs?review=true
    Select(by_id(page, "state-filter")).select_by_value("review")
    wait_for(page, lambda d: not d.find_elements(By.CSS_SELECTOR, f"#jobs-table tr[data-job='{job['id']}']")
             and d.find_elements(By.CSS_SELECTOR, f"#jobs-table tr[data-job='{flagged['id']}']"),
             what="only the flagged job under 'needs review'")
    Select(by_id(page, "state-filter")).select_by_value("")
    row = wait_for(page, lambda d: d.find_elements(By.CSS_SELECTOR, f"#jobs-table tr[data-job='{job['id']}']"),
                   what="the job in the list again")[0]
    row.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(page, lambda d: d.execute_script(
        "const i = document.querySelector('#job-preview img.after'); return i && i.complete && i.naturalWidth > 0"),
        what="the result preview")
    assert page.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    by_id(page, "nav-try").click()
    choose_operation(page, "swap")
    page.driver.find_element(By.CSS_SELECTOR, "#params-box summary").click()  # unfold: the longest form
    assert page.driver.execute_script("return document.getElementById('params-box').open")
    assert page.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert page.recorder.foreign(page.origin) == []
    assert csp_problems(page) == []


def test_a_full_backlog_says_when_to_retry(page, api_factory, tmp_path) -> None:
    """A second API with a backlog limit of 1 and no worker: its queued job fills it, the page gets 429."""
    busy = api_factory(max_request_bytes=MAX_REQUEST_BYTES, backlog_limit=1, backlog_cache_seconds=0,
                       backlog_retry_after_seconds=7)
    busy.client().submit(PHOTOS[0], "mask")  # stays queued: nobody works for this server
    page.origin = busy.url
    enter_key(page)
    choose_operation(page, "remove")
    choose_files(page, PHOTOS[1])
    by_id(page, "submit").click()
    error = wait_for(page, lambda d: by_id(page, "form-error").is_displayed() and by_id(page, "form-error"),
                     what="the 429 message")
    assert "busy (429 backlog_full)" in error.text and "Try again in 7 s" in error.text, error.text
    assert cards(page) == []
    assert page.recorder.foreign(busy.url) == []


def test_a_model_choice_appears_when_the_server_lists_models(page) -> None:
    """Servers with a model registry answer GET /v1/models and give operations a ``model`` parameter
    (anyOf [enum, null]); this one has neither (its 404 is handled: every other test runs without), so
    both answers are shaped here, in the page, as such a server gives them."""
    page.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const realFetch = window.fetch;
        window.fetch = async (url, opts) => {
          if (String(url) === "/v1/models") return new Response(JSON.stringify({default: "general", models: [
            {name: "general", description: "Any object: products, people. U-Net", default: true},
            {name: "pets", description: "Cats and dogs only: the seed U-Net", default: false}]}),
            {status: 200, headers: {"Content-Type": "application/json"}});
          const resp = await realFetch(url, opts);
          if (String(url) !== "/v1/operations") return resp;
          const ops = await resp.json();
          ops.remove.properties = {model: {anyOf: [{enum: ["general", "pets"], type: "string"}, {type: "null"}],
            default: null, title: "Model", description: "segmentation model"}, ...ops.remove.properties};
          return new Response(JSON.stringify(ops), {status: 200, headers: {"Content-Type": "application/json"}});
        };"""})
    enter_key(page)
    choose_operation(page, "remove")
    model = wait_for(page, lambda d: by_id(page, "param-model"), what="the model select")
    labels = [o.text for o in model.find_elements("css selector", "option")]
    assert labels == ["(the service's default: general)", "general — Any object", "pets — Cats and dogs only"]
    assert page.driver.execute_script("return collectParams()") == {}  # the default: nothing sent
    from selenium.webdriver.support.ui import Select

    Select(model).select_by_value("pets")
    assert page.driver.execute_script("return collectParams()") == {"model": "pets"}
