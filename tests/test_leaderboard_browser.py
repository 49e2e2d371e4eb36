"""The leaderboard site in headless Chromium: every column sorts, no console error, no network request."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloakbench.reports.site import render_site
from tests.test_report_browser import CHROMIUM, LAUNCH_ARGS

ENTRIES = Path(__file__).resolve().parent.parent / "leaderboard" / "v1-toy"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.skipif(not list(ENTRIES.glob("*.json")), reason="no committed v1-toy entry"),
]

COLUMN_TEXT = "Array.from(document.querySelectorAll('table.board tbody tr')).map(r => r.cells[{i}].getAttribute('data-sort') ?? r.cells[{i}].textContent.trim())"


def sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value.lower())


def test_every_column_sorts_without_errors_or_network(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    index = render_site([ENTRIES], tmp_path / "site")
    root = (tmp_path / "site").as_uri()
    requests, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(index.as_uri(), wait_until="load")
            columns = page.eval_on_selector_all("table.board thead th", "n => n.length")
            assert columns == 10
            for i in range(columns):
                header = page.locator("table.board thead th button").nth(i)
                header.click()
                ascending = page.evaluate(COLUMN_TEXT.format(i=i))
                assert [sort_key(v) for v in ascending] == sorted(sort_key(v) for v in ascending), i
                header.click()
                descending = page.evaluate(COLUMN_TEXT.format(i=i))
                assert [sort_key(v) for v in descending] == sorted((sort_key(v) for v in descending), reverse=True), i
            page.fill("input.filter", "photoguard")
            visible = page.eval_on_selector_all("table.board tbody tr:not([hidden])", "n => n.length")
            assert visible == 3
            page.goto(
                page.locator("table.board tbody tr:not([hidden]) a").first.get_attribute("href")
                and (
                    index.parent / page.locator("table.board tbody tr:not([hidden]) a").first.get_attribute("href")
                ).as_uri()
            )
            broken = page.eval_on_selector_all("img", "n => n.filter(x => !(x.complete && x.naturalWidth > 0)).length")
            images = page.eval_on_selector_all("img", "n => n.length")
        finally:
            browser.close()
    assert errors == []
    assert images == 6 and broken == 0
    assert requests and all(r.startswith(root) for r in requests), requests
