"""Real-browser test: headless Debian Chromium (driven by selenium + chromedriver) uses the web page.

It loads the page, picks a gallery thumbnail as reference, types a modification, submits, and waits for
the result thumbnails to be loaded and scored; then does the same with a file upload. A screenshot is
saved to ``browser-search.png`` in the artefact folder (``$ZSCIR_TEST_ARTIFACTS`` or a pytest temp folder;
the path is printed). Skipped when chromium, chromedriver or selenium is missing (.ci/install-browser.sh
installs them).
"""

from __future__ import annotations

import shutil
import time

import pytest
from PIL import Image

from test_serve_api import running_server, served_index, small_limits
from test_serve_load import artefact_dir

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium/chromedriver not installed")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1400"]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _loaded_result_images(driver) -> list:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#results figure.result')).map(f => ({"
        " id: f.dataset.id, caption: f.querySelector('figcaption').textContent,"
        " ok: f.querySelector('img').complete && f.querySelector('img').naturalWidth > 0}))")


def test_page_query_by_click_and_by_upload(tmp_path, tmp_path_factory, browser):
    from selenium.webdriver.common.by import By

    from zscir.serve import ServeConfig, create_app

    photos, _, retriever, ids = served_index(tmp_path, n=24)
    with running_server(create_app(retriever, ServeConfig(limits=small_limits()))) as url:
        browser.get(url + "/")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#gallery figure")) == 24, what="gallery")
        options = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#method option"), what="methods")
        assert "sum" in [o.get_attribute("value") for o in options]
        assert "24 images" in browser.find_element(By.ID, "summary").text

        # 1) reference = a gallery thumbnail
        ref = browser.find_elements(By.CSS_SELECTOR, "#gallery figure")[5]
        ref_id = ref.get_attribute("data-id")
        ref.click()
        assert ref_id in browser.find_element(By.ID, "reference-label").text
        browser.find_element(By.ID, "text").send_keys("the same but more blue")
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("8")
        browser.find_element(By.ID, "search").click()
        results = wait_for(lambda: (r := _loaded_result_images(browser)) and len(r) == 8 and all(x["ok"] for x in r)
                           and r, what="8 loaded result thumbnails")
        assert ref_id not in [r["id"] for r in results] and set(r["id"] for r in results) <= set(ids)
        assert results[0]["caption"].startswith("#1 ")
        scores = [float(r["caption"].split()[1]) for r in results]
        assert scores == sorted(scores, reverse=True)
        assert "8 results with sum" in browser.find_element(By.ID, "status").text
        assert f"reference is indexed item {ref_id}: excluded" in browser.find_element(By.ID, "status").text
        shot = artefact_dir(tmp_path_factory) / "browser-search.png"
        assert browser.save_screenshot(str(shot))
        print(f"\nbrowser screenshot: {shot}")

        # 2) reference = an uploaded file, with the image-only method: an indexed file's bytes are excluded
        # (the page says so); the same pixels re-encoded are another image, and it finds that photo first
        browser.find_element(By.ID, "file").send_keys(str(photos / ids[7]))
        browser.find_element(By.CSS_SELECTOR, "#method option[value='image']").click()
        browser.find_element(By.ID, "search").click()
        wait_for(lambda: f"reference is indexed item {ids[7]} (same content): excluded"
                 in browser.find_element(By.ID, "status").text, what="upload of an indexed file")
        assert ids[7] not in [r["id"] for r in _loaded_result_images(browser)]
        reencoded = tmp_path / "reencoded.png"
        Image.open(photos / ids[7]).save(reencoded, compress_level=1)
        browser.find_element(By.ID, "file").send_keys(str(reencoded))
        browser.find_element(By.ID, "search").click()
        wait_for(lambda: (r := _loaded_result_images(browser)) and r[0]["id"] == ids[7] and all(x["ok"] for x in r),
                 what="upload results")
        # 3) an error is shown, not thrown: upload a non-image
        bad = tmp_path / "not-an-image.png"
        bad.write_bytes(b"hello")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        browser.find_element(By.ID, "search").click()
        wait_for(lambda: "not a supported image" in browser.find_element(By.ID, "error").text, what="error message")
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "/search" not in e["message"]]
        assert not severe, severe
