"""Screenshot a cloakbench report (or one of its sections) with Debian's headless Chromium.

The README's pictures of the demo report are made this way, so anyone can remake them:

    python scripts/screenshot_report.py runs/demo/report.html docs/demo_report.png
    python scripts/screenshot_report.py runs/demo/report.html docs/demo_grids.png --grid "sds- → sdedit @ 0.3"

``--section`` takes the id of a report section (``leaderboard``, ``grids``, ``plots``, ...:
``reports/templates/report.html.j2``); ``--grid TEXT`` opens the collapsed image grids and
takes the first grid whose title contains TEXT; without either, the first screen (1400×900, the width the ranked leaderboard is made to fit).
Needs ``/usr/bin/chromium`` (``.ci/run`` installs it) and the ``playwright`` package (in the
``test`` extra); the report is opened from disk and makes no network request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--section", default=None, help="a section id of the report; default: the first screen")
    parser.add_argument("--grid", default=None, help="the first image grid whose title contains this text")
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"{args.report}: no such report; run `make demo` (or bench compare/report) first", file=sys.stderr)
        return 2
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(args.report.resolve().as_uri(), wait_until="load")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            if args.grid is not None:
                page.eval_on_selector_all("section#grids details", "nodes => nodes.forEach(n => n.open = true)")
                grids = [
                    g
                    for g in page.query_selector_all("section#grids .grid")
                    if args.grid in (g.query_selector("h3").text_content() or "")
                ]
                if not grids:
                    print(f"{args.report} has no image grid titled like {args.grid!r}", file=sys.stderr)
                    return 2
                grids[0].screenshot(path=str(args.out))
            elif args.section is None:
                page.screenshot(path=str(args.out))
            else:
                section = page.query_selector(f"section#{args.section}")
                if section is None:
                    print(f"{args.report} has no section {args.section!r}", file=sys.stderr)
                    return 2
                section.screenshot(path=str(args.out))
        finally:
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
