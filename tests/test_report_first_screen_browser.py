"""The first screen in Chromium at 1400×900 (#27): the headline and the whole ranked table are visible.

Same setup as tests/test_report_browser.py (Debian's chromium driven by playwright); the
screenshot is kept under test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import pytest

from cloakbench.reports.html import write_report
from tests.test_report_browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS
from tests.test_report_leaderboard import write_sweep_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def test_the_ranked_table_and_headline_fit_the_first_screen(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    report = write_report(write_sweep_run(tmp_path / "run"))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(report.as_uri(), wait_until="load")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "first_screen_1400.png"))
            box = page.evaluate(
                """() => {
                  const table = document.querySelector('section#leaderboard table.leaderboard').getBoundingClientRect();
                  const headline = document.querySelector('.headline').getBoundingClientRect();
                  return {right: table.right, bottom: table.bottom, headline: headline.bottom,
                          width: document.documentElement.clientWidth};
                }"""
            )
        finally:
            browser.close()
    assert box["right"] <= box["width"] and box["bottom"] <= 900 and box["headline"] <= 900, box
