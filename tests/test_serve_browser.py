"""The web page of `agvas serve`, driven in headless Chromium through Selenium and /usr/bin/chromedriver.

Skipped only where /usr/bin/chromium is missing (.ci/run installs it). The screenshots stay in the
test's tmp folder (page_segment.png, page_chat.png) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from model_fixtures import build

from agvas.infer import Segmenter
from agvas.model.config import preset_config
from agvas.serve.app import create_app
from agvas.serve.server import BackgroundServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,960")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium "
                                                               "chromium-driver)")


@pytest.fixture(scope="module")
def server_url(tiny_backbones, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-browser") / "ckpt"
    build(preset_config("tiny"), tiny_backbones).save_pretrained(folder)
    segmenter = Segmenter.from_pretrained(folder, device="cpu")
    with BackgroundServer(create_app(segmenter, max_new_tokens=24)) as server:
        yield server.url


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)  # no Selenium Manager
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_segments_an_example_and_chats(server_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def element(id_: str):
        return browser.find_element(By.ID, id_)

    wait = WebDriverWait(browser, 30)
    browser.get(server_url + "/")
    examples = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".example"))
    assert len(examples) >= 3
    wait.until(lambda d: "ready" in element("health").text)
    examples[0].click()
    wait.until(lambda d: element("segment-button").is_enabled())
    element("segment-button").click()
    wait.until(lambda d: element("result").is_displayed() and browser.execute_script(
        "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0;"))

    assert not element("error").is_displayed(), element("error").text
    assert element("answer").text.strip()
    labels = browser.find_elements(By.CSS_SELECTOR, "#answer .anchor")  # the anchors, as labels, not "[SEG]"
    assert [a.text for a in labels] == ["NOR", "ANO", "SEG"] and "[" not in element("answer").text
    assert 0.0 <= float(element("score").text) <= 1.0
    assert element("decision").text in ("ANOMALOUS", "NORMAL")  # direct mode always decodes a mask
    for image in ("heat", "mask"):
        assert browser.execute_script(f"return document.getElementById('{image}').naturalWidth") == 192
    assert element("download").get_attribute("href").startswith("blob:")
    assert element("download").get_attribute("download") == "metal_hole_mask.png"
    browser.save_screenshot(str(tmp_path / "page_segment.png"))

    element("tab-chat").click()
    element("chat-input").send_keys("Is there a defect here?")
    element("chat-send").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    assert [m.text for m in browser.find_elements(By.CSS_SELECTOR, ".msg.user")] == ["Is there a defect here?"]
    assert not element("error").is_displayed(), element("error").text
    browser.save_screenshot(str(tmp_path / "page_chat.png"))

    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # no failed loads, no script errors, no CSP violations
