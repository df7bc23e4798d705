"""The demo's picture in docs/usage.md: headless Chromium types prompts into the real page, then a screenshot.

    python benchmarks/demo_screenshot.py RUN/checkpoints/last.ckpt --out docs/demo_screenshot.png

Serves the checkpoint as demo.py does (uvicorn, a free localhost port), generates 8 images of one
prompt and an interpolation strip between two others through the page's own forms, and saves the
whole page as a PNG. Needs Debian's chromium and chromium-driver (tests/browser.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import browser  # noqa: E402 - tests/browser.py


def interpolate_on_page(driver, a: str, b: str, steps: int, timeout: float = 120) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for field, text in (("a", a), ("b", b), ("steps", steps)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(text))
    driver.find_element(By.ID, "interpolate").click()
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(
        "const img = document.getElementById('strip');"
        "return (img.complete && img.naturalWidth > 0) || document.getElementById('interpolate-error').textContent;"))
    error = driver.find_element(By.ID, "interpolate-error").text
    if error:
        raise SystemExit(f"interpolation failed on the page: {error}")


def main() -> None:
    from lightning_modules.demo import DemoModel, serving

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="RUN/checkpoints/last.ckpt or an export folder")
    parser.add_argument("--prompt", default="a large red circle in the center")
    parser.add_argument("--a", default="a small blue square on the left")
    parser.add_argument("--b", default="a large yellow triangle on the right")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/demo_screenshot.png")
    args = parser.parse_args()
    if reason := browser.missing():
        raise SystemExit(f"no headless Chromium: {reason}")
    model = DemoModel(args.checkpoint)
    with serving(model) as url, browser.chromium(width=1000, height=1000) as driver:
        shown = browser.generate_on_page(driver, url, args.prompt, n=8, seed=args.seed)
        if shown["error"] or shown["width"] == 0:
            raise SystemExit(f"generation failed on the page: {shown}")
        interpolate_on_page(driver, args.a, args.b, steps=6)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the viewport: the whole page
                               {"width": 1000, "height": height, "deviceScaleFactor": 1, "mobile": False})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
    print(f"{args.out}: the page with {shown['width']}x{shown['height']} px of generated images")


if __name__ == "__main__":
    main()
