"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium, for the demo page.

Nothing is downloaded: the browser and its driver are the system's, found at fixed paths (or
$CHROMIUM / $CHROMEDRIVER). Used by tests/test_demo.py and benchmarks/demo_screenshot.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# Headless in a container, as root, with nothing fetched from the network behind the page's back.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


def missing() -> str | None:
    """Why the browser cannot run here (for pytest.skip), or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"no {path}: apt-get install {package} (.ci/run does where apt works)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@contextmanager
def chromium(width: int = 1000, height: int = 900) -> Iterator:
    """A headless Chromium WebDriver with a new, empty profile, closed and removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gan-ga-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def generate_on_page(driver, url: str, prompt: str, *, n: int | str = 8, seed: int | str = 0,
                     timeout: float = 120) -> dict:
    """Open the demo at ``url``, type ``prompt`` (and n, seed) as a user would, click Generate and
    wait for the answer: the result image loaded or a message shown. Returns what the page shows:
    ``{"width": naturalWidth, "height": naturalHeight, "error": text}``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    for field, text in (("prompt", prompt), ("n", n), ("seed", seed)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(text))
    before = driver.execute_script("return document.getElementById('result').src")
    driver.find_element(By.ID, "generate").click()

    def answered(d) -> dict | bool:
        shown = d.execute_script(
            "const img = document.getElementById('result');"
            "return {src: img.src, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,"
            " error: document.getElementById('error').textContent};")
        if shown["error"]:
            return shown
        return shown if shown["src"] != before and shown["complete"] and shown["width"] > 0 else False

    shown = WebDriverWait(driver, timeout, poll_frequency=0.1).until(answered)
    return {"width": shown["width"], "height": shown["height"], "error": shown["error"]}
