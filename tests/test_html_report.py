"""The analysts' HTML page, opened in a real browser (Debian's chromium + chromedriver, driven by selenium headless):
every image loads, no console error, every link lands, and the leaderboard rows equal the SQL view."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tasks.html_report import write_html_report
from tasks.report import read_leaderboard, with_interval

pytestmark = pytest.mark.usefixtures("ray_cluster", "prefect_harness")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def scored(small_corpus, tmp_path_factory):
    from flows.score import score_corpus

    out = tmp_path_factory.mktemp("html")
    for answerer in ("stat", "random", "frequent"):
        score_corpus(corpus=str(small_corpus), answerer=answerer, run_id=f"page-{answerer}", out=str(out), shard_size=8, bootstrap=200)
    return out


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium / chromedriver missing: `make test` installs them (make browser)")
        pytest.skip("chromium / chromedriver not installed (make browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no driver download: Debian's
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_is_self_contained_and_lists_runs_plots_and_drilldowns(scored, tmp_path):
    written = write_html_report(str(scored), str(tmp_path / "report.html"), ["page-stat", "page-random", "page-frequent"], 7, 200)
    page = (tmp_path / "report.html").read_text()
    assert written["images"] >= 2 + 3 * 8 and "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count('id="drill-page_stat') == 3 and page.count('id="drill-page_random') == 2 and page.count('id="drill-') == 7
    assert 'id="compare-page_stat-page_random"' in page
    print(f"\nFIGURE html report (3 runs x 24 questions): {written['seconds']:.1f} s, {written['bytes'] / 1e6:.2f} MB, {written['images']} images")


def test_the_page_in_a_real_browser(scored, tmp_path, browser):
    path = tmp_path / "report.html"
    write_html_report(str(scored), str(path), ["page-stat", "page-random", "page-frequent"], 6, 200)
    browser.get(path.as_uri())
    images = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
    assert images and all(complete and width > 0 for complete, width, _ in images), [alt for c, w, alt in images if not (c and w)]
    broken = browser.execute_script(
        "return Array.from(document.querySelectorAll('a[href^=\"#\"]')).map(a => a.getAttribute('href').slice(1))"
        ".filter(id => !document.getElementById(id))"
    )
    assert broken == []
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => Array.from(r.cells).map(c => c.innerText))"
    )
    board = read_leaderboard(str(scored), ["page-stat", "page-random", "page-frequent"])
    expected = [
        [r.answerer, r.run_id, str(r.n), with_interval(r.accuracy, r.accuracy_lo, r.accuracy_hi),
         with_interval(r.macro_f1, r.macro_f1_lo, r.macro_f1_hi), str(r.invalid), str(r.n_error)]
        for r in board.itertuples()
    ]
    assert rows == expected
    screenshot = tmp_path / "report.png"
    browser.set_window_size(1400, max(1000, browser.execute_script("return document.body.scrollHeight")))
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    print(f"\nscreenshot of the report: {screenshot}")
    Path(os.environ.get("ARFSCORE_SCREENSHOT_DIR", tmp_path)).mkdir(parents=True, exist_ok=True)
