"""Make docs/page_batch.png: the web page after a batch of the seven examples with the shipped checkpoint.

    .venv/bin/python docs/make_screenshot.py [OUT.png]

Needs Debian's chromium and chromium-driver (as the browser test). The page is driven exactly as a
user would: choose the example files as a batch, run it, sort by score, open the top row.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from agvas.infer import Segmenter
from agvas.serve.app import create_app
from agvas.serve.examples import EXAMPLES_DIR
from agvas.serve.server import BackgroundServer

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    segmenter = Segmenter.from_pretrained(ROOT / "checkpoints" / "agvas-tiny", device="cpu")
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(flag)
    with BackgroundServer(create_app(segmenter)) as server:
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            wait = WebDriverWait(browser, 120)
            browser.get(server.url + "/")
            wait.until(lambda d: "ready" in d.find_element(By.ID, "health").text)
            files = sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))
            browser.find_element(By.ID, "batch-files").send_keys("\n".join(files))
            browser.find_element(By.ID, "batch-run").click()
            wait.until(lambda d: d.execute_script("return !state.batch.running && state.batch.rows.length > 0"))
            browser.find_element(By.ID, "sort-score").click()
            browser.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr .link-button")[0].click()
            wait.until(lambda d: d.execute_script("return !state.busy && state.shown && state.shown.pixels"))
            browser.execute_script("window.scrollTo(0, 0);")
            out.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(out))
        finally:
            browser.quit()
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "page_batch.png")
