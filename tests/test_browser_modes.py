"""Real-browser test of the page's text-only and image-only searches (issue 23 §2).

Headless Debian Chromium driven by selenium + chromedriver, as tests/test_browser.py: a text typed without
any reference searches by the text (the status says so), a gallery thumbnail without text finds more like
it (itself excluded), "No reference" goes back to a text search, an empty query is refused on the page,
and a method picked explicitly that needs the missing side shows the server's one-line refusal. Skipped
when chromium, chromedriver or selenium is missing (.ci/install-browser.sh installs them).
"""

from __future__ import annotations

import pytest

from test_browser import CHROMEDRIVER, CHROMIUM, browser, wait_for  # noqa: F401 - the shared browser fixture
from test_serve_api import running_server, served_index, small_limits

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium/chromedriver not installed")


def results(driver) -> list:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#results figure.result')).map(f => ({"
        " id: f.dataset.id, caption: f.querySelector('figcaption').textContent,"
        " ok: f.querySelector('img').complete && f.querySelector('img').naturalWidth > 0}))")


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def search(driver, k: int) -> None:
    box = driver.find_element("id", "k")
    box.clear()
    box.send_keys(str(k))
    wait_for(lambda: driver.find_element("id", "search").is_enabled(), what="the previous search to finish")
    driver.execute_script("document.getElementById('status').textContent = ''")  # so waits see the new one
    driver.find_element("id", "search").click()


def test_page_text_only_and_image_only(tmp_path, browser):
    from selenium.webdriver.common.by import By

    from zscir.serve import ServeConfig, create_app

    _, _, retriever, ids = served_index(tmp_path, n=16)
    with running_server(create_app(retriever, ServeConfig(limits=small_limits()))) as url:
        browser.get(url + "/")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#gallery figure")) == 16, what="gallery")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#method option[value='sum']"), what="methods")

        # 1) an empty query is refused on the page, without a request
        search(browser, 5)
        wait_for(lambda: "type a text, or both" in text_of(browser, "error"), what="empty-query message")

        # 2) a text alone: searched by the text, the page says so; the same answer as the API
        browser.find_element(By.ID, "text").send_keys("a blue square")
        search(browser, 5)
        got = wait_for(lambda: (r := results(browser)) and len(r) == 5 and all(x["ok"] for x in r) and r,
                       what="text-only results")
        status = text_of(browser, "status")
        assert "5 results with text" in status and "no reference image: searching by the text alone" in status
        assert [r["id"] for r in got] == [h.id for h in retriever.search(text="a blue square", k=5)]
        assert [r["caption"].split()[0] for r in got] == ["#1", "#2", "#3", "#4", "#5"]
        assert text_of(browser, "error") == ""

        # 3) a gallery picture alone: more like this, the picture itself excluded
        browser.find_element(By.ID, "text").clear()
        tile = browser.find_elements(By.CSS_SELECTOR, "#gallery figure")[3]
        ref_id = tile.get_attribute("data-id")
        tile.click()
        assert browser.find_element(By.ID, "clear-reference").is_displayed()
        search(browser, 4)
        wait_for(lambda: "results with image" in text_of(browser, "status"), what="image-only status")
        got = wait_for(lambda: (r := results(browser)) and len(r) == 4 and all(x["ok"] for x in r) and r,
                       what="image-only results")
        status = text_of(browser, "status")
        assert "searching by the picture alone" in status and f"reference is indexed item {ref_id}: excluded" in status
        assert ref_id not in [r["id"] for r in got]
        assert [r["id"] for r in got] == [h.id for h in retriever.search(ref_id, k=4)]

        # 4) a method picked explicitly that needs the missing text: the server's refusal, shown on the page
        browser.find_element(By.CSS_SELECTOR, "#method option[value='sum']").click()  # the default: still auto
        search(browser, 4)
        wait_for(lambda: "results with image" in text_of(browser, "status"), what="default method stays automatic")
        browser.find_element(By.CSS_SELECTOR, "#method option[value='text']").click()
        search(browser, 4)
        wait_for(lambda: "method 'text' needs a text" in text_of(browser, "error"), what="refusal shown")

        # 5) "No reference" goes back to a text search
        browser.find_element(By.ID, "clear-reference").click()
        assert not browser.find_element(By.ID, "reference-preview").is_displayed()
        browser.find_element(By.ID, "text").send_keys("red")
        search(browser, 3)
        wait_for(lambda: "3 results with text" in text_of(browser, "status"), what="text search after clearing")
        assert text_of(browser, "error") == ""
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "/search" not in e["message"]]
        assert not severe, severe
