"""The report in a real browser: Debian's headless Chromium driven by Python playwright.

Checks what only a browser can: the page loads with no console error under its CSP, makes
no network request, and a hostile file name is inert text in the DOM. A full-page
screenshot is kept under test-artifacts/ for a human to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloakbench.reports.html import write_report
from tests.test_report import EVIL_NAME, EVIL_SKIPPED, write_fake_run
from tests.test_report_leaderboard import write_sweep_run

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"
    ),
]


@pytest.fixture(scope="module")
def loaded_page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    report = write_report(write_fake_run(tmp_path_factory.mktemp("browser") / "run"))
    url = report.as_uri()
    requests, console_errors, page_errors = [], [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(url, wait_until="load")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            state = {
                "text": page.inner_text("body"),
                "onerror": page.eval_on_selector_all("[onerror], [onload]", "nodes => nodes.length"),
                "broken_images": page.eval_on_selector_all(
                    "img", "nodes => nodes.filter(n => !(n.complete && n.naturalWidth > 0)).length"
                ),
                "images": page.eval_on_selector_all("img", "nodes => nodes.length"),
            }
        finally:
            browser.close()
    return url, requests, console_errors, page_errors, state


def test_loads_without_errors_or_network(loaded_page):
    url, requests, console_errors, page_errors, state = loaded_page
    assert console_errors == [] and page_errors == []
    assert requests and all(request == url or request.startswith("data:") for request in requests), requests
    assert state["images"] > 10 and state["broken_images"] == 0
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_hostile_names_render_as_text(loaded_page):
    *_, state = loaded_page
    assert state["onerror"] == 0
    assert EVIL_NAME in state["text"] and EVIL_SKIPPED in state["text"]


@pytest.fixture(scope="module")
def sweep_page(tmp_path_factory):
    """The report of a run with a budget sweep, two seeds, two attack models and categories."""
    sync_api = pytest.importorskip("playwright.sync_api")
    report = write_report(write_sweep_run(tmp_path_factory.mktemp("browser-sweep") / "run"))
    url = report.as_uri()
    requests, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url, wait_until="load")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report_sweep_first_screen.png"))
            state = {
                "leaderboard_top": page.eval_on_selector("table.leaderboard", "n => n.getBoundingClientRect().top"),
                "intervals": page.eval_on_selector_all("table.leaderboard .ci", "nodes => nodes.length"),
                "transfer_tables": page.eval_on_selector_all("#transfer table", "nodes => nodes.length"),
                "category_headers": page.eval_on_selector_all("#categories th", "n => n.map(x => x.textContent)"),
                "grids_open": page.eval_on_selector("details.grids", "n => n.open"),
                "curve": page.eval_on_selector_all("img[alt^='strength (']", "nodes => nodes.length"),
                "broken_images": page.eval_on_selector_all(
                    "img", "nodes => nodes.filter(n => !(n.complete && n.naturalWidth > 0)).length"
                ),
            }
        finally:
            browser.close()
    return url, requests, errors, state


def test_sweep_report_shows_intervals_curve_and_transfer_first(sweep_page):
    url, requests, errors, state = sweep_page
    assert errors == []
    assert requests and all(request == url or request.startswith("data:") for request in requests), requests
    assert state["broken_images"] == 0
    assert 0 < state["leaderboard_top"] < 900  # on the first screen at 1280x900
    assert state["intervals"] >= 4 * 5  # every budget row: its per-attacker, mean and worst-case intervals
    assert state["transfer_tables"] == 4 and state["curve"] == 1
    assert state["category_headers"] == ["protection", "landscape", "portrait"]
    assert state["grids_open"] is False  # the per-cell grids are collapsed
