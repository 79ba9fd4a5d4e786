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
    assert not element("note").is_displayed()  # direct mode's fixed answer cannot contradict the mask
    for image in ("heat", "mask"):
        assert browser.execute_script(f"return document.getElementById('{image}').naturalWidth") == 192
    assert element("download").get_attribute("href").startswith("blob:")
    assert element("download").get_attribute("download") == "metal_hole_mask.png"
    browser.save_screenshot(str(tmp_path / "page_segment.png"))
    shown = browser.execute_script("const r = {...state.shown.result, text_verdict: 'normal', anomalous: true};"
                                   " showResult(r); return document.getElementById('note').textContent;")
    assert shown == "The answer reads as normal, but the mask marks an anomaly: they disagree."
    assert browser.execute_script("return [contradiction('normal', false), contradiction(null, true),"
                                  " contradiction('anomalous', false)]") == [
        "", "", "The answer reads as anomalous, but the mask is empty: they disagree."]  # as a re-cut mask moves

    element("tab-chat").click()
    element("chat-input").send_keys("Is there a defect here?")
    element("chat-send").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    assert [m.text for m in browser.find_elements(By.CSS_SELECTOR, ".msg.user")] == ["Is there a defect here?"]
    assert not element("error").is_displayed(), element("error").text
    browser.save_screenshot(str(tmp_path / "page_chat.png"))

    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # no failed loads, no script errors, no CSP violations


CONTRAST_FAILURES = """
const luminance = (rgb) => {
  const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
const background = (el) => {
  for (; el; el = el.parentElement) {
    const c = parse(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const failures = [];
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length || el.closest("[hidden]") || el.closest(":disabled")) continue;
  const style = getComputedStyle(el);
  if (style.visibility === "hidden" || style.clip === "rect(0px, 0px, 0px, 0px)") continue;
  const fg = luminance(parse(style.color).slice(0, 3)), bg = luminance(background(el));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
  const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  const text = el.textContent.trim().slice(0, 30);
  if (ratio < needed) failures.push(`${el.tagName}#${el.id}.${el.className} "${text}" ${ratio.toFixed(2)}`);
}
return failures;
"""

UNLABELLED = """
return [...document.querySelectorAll("input, select, textarea, button")].filter((el) => {
  if (el.type === "hidden") return false;
  const name = el.labels && el.labels.length ? el.labels[0].textContent
    : el.getAttribute("aria-label") || (el.getAttribute("aria-labelledby") ? "x" : "") || el.textContent;
  return !name.trim();
}).map((el) => el.id || el.outerHTML.slice(0, 60));
"""


def test_page_batch_threshold_and_accessibility(server_url, browser, tmp_path):
    """Three images as a batch (a table of three rows, sortable, one zip), the threshold slider re-cutting the
    shown map without a request, and WCAG basics: labels, keyboard reach and operation, AA contrast."""
    import base64
    import io
    import json
    import zipfile

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def element(id_: str):
        return browser.find_element(By.ID, id_)

    wait = WebDriverWait(browser, 60)
    browser.get(server_url + "/")
    wait.until(lambda d: "ready" in element("health").text)
    assert not browser.execute_script(UNLABELLED)
    assert all(img.get_attribute("alt") is not None for img in browser.find_elements(By.TAG_NAME, "img"))

    # keyboard: the tab list is one stop and arrows move in it; Tab reaches the drop zone and Segment
    examples = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".example"))
    examples[0].click()
    wait.until(lambda d: element("segment-button").is_enabled())
    browser.execute_script("document.querySelector('header a').focus();")  # Tab on from the page's top
    reached = []
    for _ in range(60):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.execute_script("return document.activeElement.id"))
        if reached[-1] == "segment-button":
            break
    assert "drop" in reached and "threshold" in reached and reached[-1] == "segment-button", reached
    assert "tab-chat" not in reached  # inactive tabs are reached by arrows, not by Tab
    element("tab-segment").send_keys(Keys.ARROW_RIGHT)
    assert element("tab-batch").get_attribute("aria-selected") == "true" and element("batch-panel").is_displayed()
    assert browser.execute_script("return document.activeElement.id") == "tab-batch"
    element("tab-batch").send_keys(Keys.ARROW_LEFT)
    assert element("segment-form").is_displayed()

    # the slider re-cuts the shown map in the page: no request, verdict and area follow the mask
    element("segment-button").click()
    wait.until(lambda d: element("result").is_displayed() and d.execute_script("return !!state.shown.pixels"))
    requests_before = browser.execute_script("return performance.getEntriesByType('resource').length")
    server_mask = element("mask").get_attribute("src")
    areas = {}
    for t in (0.0, 0.99, 0.5):
        browser.execute_script("const s = document.getElementById('threshold'); s.value = arguments[0];"
                               "s.dispatchEvent(new Event('input'));", t)
        areas[t] = float(element("area").text.split()[0])
        assert element("decision").text == ("ANOMALOUS" if areas[t] > 0 else "NORMAL")
        assert element("threshold-value").text == f"{t:.2f}"
    assert areas[0.0] >= areas[0.5] >= areas[0.99] and areas[0.0] > 0
    assert element("mask").get_attribute("src") == server_mask  # back at the server's own cut
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == requests_before

    # a batch of three: rows, sorting by score, the zip
    paths = []
    for i in range(3):
        path = tmp_path / f"part_{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    element("batch-files").send_keys("\n".join(paths))
    assert element("batch-panel").is_displayed() and "3 images chosen" in element("batch-status").text
    element("batch-run").click()
    wait.until(lambda d: d.execute_script("return !state.batch.running && state.batch.rows.length === 3"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr")
    assert len(rows) == 3 and "done: 3 of 3" in element("batch-status").text
    element("sort-score").click()
    scores = [float(r.find_elements(By.TAG_NAME, "td")[3].text) for r in
              browser.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr")]
    assert scores == sorted(scores, reverse=True)
    assert element("score-header").get_attribute("aria-sort") == "descending"
    archive = base64.b64decode(browser.execute_script(
        "const z = buildBatchZip(); let s = ''; for (const b of z) s += String.fromCharCode(b); return btoa(s);"))
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        names = sorted(zf.namelist())
        assert names == ["masks/part_0_mask.png", "masks/part_1_mask.png", "masks/part_2_mask.png", "results.jsonl"]
        records = [json.loads(line) for line in zf.read("results.jsonl").decode().splitlines()]
        assert [r["file"] for r in records] == ["part_0.png", "part_1.png", "part_2.png"]
        for record, height in zip(records, (40, 48, 56), strict=True):
            mask = np.asarray(Image.open(io.BytesIO(zf.read(record["mask"]))))
            assert mask.shape == (height, 56) and record["anomalous"] == bool(mask.any())
            assert record["threshold"] == 0.5
    browser.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr .link-button")[0].click()
    wait.until(lambda d: element("image-name").text.startswith("part_"))
    wait.until(lambda d: d.execute_script("return !state.busy && state.shown && state.shown.pixels !== null"))
    assert not element("error").is_displayed(), element("error").text

    assert not browser.execute_script(CONTRAST_FAILURES)
    element("tab-chat").click()
    assert not browser.execute_script(CONTRAST_FAILURES)
    element("tab-batch").click()
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(tmp_path / "page_batch.png"))
    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems
