"""The web page in headless Chromium (selenium + Debian's chromedriver, offline): load the page,
submit a prompt, see both answers and RETRO's passages; add a document through the form.

Skipped only where chromium or chromedriver is absent (CI installs them: .ci/run).
"""

from __future__ import annotations

import shutil

import pytest

from service.app import create_app
from tests.service.conftest import live_server, make_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_prompt_both_answers_and_passages_then_add_a_document(browser, settings, fresh_index):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(make_settings(**{**settings.model_dump(), "index": fresh_index}))
    with live_server(app) as base:
        browser.get(base + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "tiny-gpt2" in d.find_element(By.ID, "served").text)
        assert browser.find_element(By.ID, "retro-name").text == "tiny-retro"
        served = browser.find_element(By.ID, "served").text
        assert served == "tiny-retro (with retrieval) vs tiny-gpt2 (no retrieval)"

        browser.find_element(By.ID, "prompt").send_keys("Zorbland is a small island")
        browser.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.ID, "compare-timing").text != "")
        assert browser.find_element(By.ID, "error").text == ""
        assert "tokens/s" in browser.find_element(By.ID, "retro-timing").text
        assert "tokens/s" in browser.find_element(By.ID, "compare-timing").text
        assert browser.find_element(By.ID, "retro-text").text not in ("", "generating...")
        assert browser.find_element(By.ID, "compare-text").text != ""
        passages = browser.find_elements(By.CSS_SELECTOR, "#passages li")
        assert len(passages) >= 2 and "geo/zorbland" in passages[0].text and "Quibbletown" in passages[0].text
        # each passage names the text its retrieval searched: here the prompt itself
        assert 'searched: "Zorbland is a small island' in passages[0].text

        browser.find_element(By.ID, "doc-id").send_keys("page/frindle")
        browser.find_element(By.ID, "doc-text").send_keys("The frindle bird nests only in copper chimneys.")
        browser.find_element(By.ID, "add-doc").click()
        wait.until(lambda d: d.find_element(By.ID, "doc-status").text.startswith(("added", "error", "not")))
        assert browser.find_element(By.ID, "doc-status").text.startswith("added page/frindle")

        # The new document is retrieved for the next prompt, shown under RETRO's answer.
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("The frindle bird nests only in")
        browser.find_element(By.ID, "run").click()
        wait.until(lambda d: "page/frindle" in d.find_element(By.ID, "passages").text)

        # The first-token copy bias field goes with the request: a large one changes RETRO's answer
        # (the tiny model's own bias is 0), the comparison model's not.
        def answers() -> tuple[str, str]:
            browser.find_element(By.ID, "run").click()
            wait.until(lambda d: d.find_element(By.ID, "compare-timing").text != "")
            assert browser.find_element(By.ID, "error").text == ""
            return tuple(browser.find_element(By.ID, i).text for i in ("retro-text", "compare-text"))

        as_trained = answers()
        bias = browser.find_element(By.ID, "copy-bias")
        bias.send_keys("60")
        biased = answers()
        assert biased[0] != as_trained[0] and biased[1] == as_trained[1]
        bias.clear()
        # and the first-token candidates field likewise (the tiny model's own: the argmax)
        candidates = browser.find_element(By.ID, "first-candidates")
        candidates.send_keys("5")
        looked_ahead = answers()
        assert looked_ahead[0] != as_trained[0] and looked_ahead[1] == as_trained[1]
        candidates.clear()

        # The document sent again under its id: not added, unless "replace" is ticked.
        browser.find_element(By.ID, "add-doc").click()
        wait.until(lambda d: d.find_element(By.ID, "doc-status").text.startswith(("not added", "error")))
        assert "already in the index" in browser.find_element(By.ID, "doc-status").text
        text_box = browser.find_element(By.ID, "doc-text")
        text_box.clear()
        text_box.send_keys("The frindle bird nests only in copper chimneys and old bells.")
        browser.find_element(By.ID, "doc-replace").click()
        browser.find_element(By.ID, "add-doc").click()
        wait.until(lambda d: d.find_element(By.ID, "doc-status").text.startswith(("replaced", "error")))
        assert browser.find_element(By.ID, "doc-status").text.startswith("replaced page/frindle")

        # An example button fills the prompt and asks both models.
        example = browser.find_elements(By.CSS_SELECTOR, "#examples .example")[0]
        example.click()
        assert browser.find_element(By.ID, "prompt").get_attribute("value") == example.text
        wait.until(lambda d: d.find_element(By.ID, "compare-timing").text != "")
        assert browser.find_element(By.ID, "error").text == ""
