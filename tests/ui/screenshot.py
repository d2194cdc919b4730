"""The README's picture of the page, taken by headless Chromium of the real page with real results.

    maskq up &                                   # or any running service
    python -m tests.ui.screenshot --url http://127.0.0.1:8000 --key KEY --out docs/ui.png

It enters the key, sends samples/coffee.jpg to ``swap`` on a blue background and samples/chelsea.jpg
to ``remove`` (the cut-out on the checkerboard), waits for both, and saves the window as a PNG reduced
to 256 colours (the README's budget is 300 KB).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from maskq import defaults
from tests.ui import browser

SAMPLES = defaults.REPO_ROOT / "samples"


def take(url: str, key: str, out: Path, width: int = 1440, height: int = 900) -> Path:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with tempfile.TemporaryDirectory() as tmp:
        driver = browser.start(Path(tmp) / "profile", Path(tmp), width, height)
        try:
            wait = WebDriverWait(driver, 120, poll_frequency=0.2)
            driver.get(url + "/")
            wait.until(lambda d: d.find_element(By.ID, "key-input")).send_keys(key + "\n")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#operation option[value='swap']"))
            for photo, operation in (("coffee.jpg", "swap"), ("chelsea.jpg", "remove")):
                field = driver.find_element(By.ID, "files")
                driver.execute_script("arguments[0].value = '';", field)
                field.send_keys(str(SAMPLES / photo))
                Select(driver.find_element(By.ID, "operation")).select_by_value(operation)
                if operation == "swap":
                    driver.execute_script("""const i = document.getElementById("param-background_color");
                        i.value = "#3366cc"; i.dispatchEvent(new Event("input", {bubbles: true}));""")
                n = len(driver.find_elements(By.CSS_SELECTOR, "#results li"))
                driver.find_element(By.ID, "submit").click()
                wait.until(lambda d, n=n: len(d.find_elements(By.CSS_SELECTOR, "#results li[data-state=succeeded]"))
                           == n + 1 and d.execute_script(
                               "return [...document.querySelectorAll('#results img')].every(i => i.complete)"))
            Select(driver.find_element(By.ID, "operation")).select_by_value("swap")
            driver.execute_script("""const i = document.getElementById("param-background_color");
                i.value = "#3366cc"; i.dispatchEvent(new Event("input", {bubbles: true}));
                document.activeElement.blur(); window.scrollTo(0, 0);""")
            time.sleep(0.5)
            raw = Path(tmp) / "raw.png"
            driver.save_screenshot(str(raw))
        finally:
            driver.quit()
        img = Image.open(raw).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                                      dither=Image.Dither.FLOYDSTEINBERG)
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, optimize=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", type=Path, default=defaults.REPO_ROOT / "docs" / "ui.png")
    args = ap.parse_args()
    out = take(args.url.rstrip("/"), args.key, args.out)
    print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
