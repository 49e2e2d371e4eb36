"""``bench leaderboard render``: leaderboard entries → a static site (docs/LEADERBOARD.md, "The site").

Plain HTML and one small vanilla script (``templates/site_table.js.j2``, inlined), no framework,
no external request: it works from ``file://`` and on any static host. ``index.html`` holds one
table per protocol, one row per entry and budget, sortable by every column (click a header) and
filterable (a text box and a budget choice); its columns are the reported, measured
(non-adaptive) and adaptive worst cases, the overall worst case, imperceptibility and cost, and
an "unreliable" badge where an adaptive evaluation beat the reported figure
(:func:`cloakbench.reports.entry.is_unreliable`). Each entry has its page
(``entries/<protocol>/<name>.html``): every per-attack figure with ``n`` and interval, the grid of
its protected images (copied beside the page, checked against their SHA-256), and its provenance.

Safety as for the report (docs/RELIABILITY.md, "Report out"): Jinja2 with autoescape, no
``|safe``; entry values are data, never markup. The Content-Security-Policy allows images from
the site itself, inline styles, and the one inline script by its SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from cloakbench.core.io import write_atomic
from cloakbench.core.provenance import sha256_file
from cloakbench.reports import format as fmt

TEMPLATES = Path(__file__).parent / "templates"
SCRIPT = TEMPLATES / "site_table.js.j2"
ENTRY_SCHEMA = "cloakbench.leaderboard.entry"


class SiteError(ValueError):
    """An entry that cannot be rendered; the message names the file."""


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def script_and_policy() -> tuple[str, str]:
    """The table script and the page's CSP allowing it (by hash), site images and inline styles."""
    script = SCRIPT.read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = f"default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    return script, policy


def entry_files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.json"))
        elif path.is_file():
            found.append(path)
        else:
            raise SiteError(f"{path}: no such entry file or folder")
    if not found:
        raise SiteError(f"no entry JSON in {', '.join(map(str, paths))}; run `bench leaderboard run` first")
    return found


def read(path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SiteError(f"{path} is not a JSON entry ({error})") from None
    if not isinstance(entry, dict) or entry.get("schema") != ENTRY_SCHEMA:
        raise SiteError(f"{path} is not a cloakbench leaderboard entry")
    return entry


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9+\-._]", "_", name) or "entry"


def figure(record: dict[str, Any] | None, metric: str) -> dict[str, Any]:
    """Display form of one figure record: text, interval, n and the sort value."""
    if not record or record.get("mean") is None:
        return {"text": "—", "ci": "", "n": "", "value": "", "attacker": ""}
    interval = ""
    if record.get("low") is not None and record.get("high") is not None:
        interval = f"{fmt.number(record['low'], metric)}–{fmt.number(record['high'], metric)}"
    return {
        "text": fmt.number(record["mean"], metric),
        "ci": interval,
        "n": f"n={record['n']}" if record.get("n") else "",
        "value": repr(float(record["mean"])),
        "attacker": record.get("attacker", ""),
    }


def table_rows(entry: dict[str, Any], page: str) -> list[dict[str, Any]]:
    """One row per budget of an entry for the protocol's table."""
    figures = entry["figures"]
    metric = figures["headline_metric"]
    rows = []
    for budget in figures["budgets"]:
        impercept_metric = next(iter(budget["imperceptibility"]), "")
        reported = budget["reported"]
        seconds = budget["cost"].get("protect_s_per_image")
        rows.append(
            {
                "name": entry["protection"]["name"],
                "source": entry["protection"]["source"],
                "page": page,
                "budget": budget["setting"],
                "budget_value": re.sub(r"^[^=]*=", "", budget["setting"]),
                "reported": figure({"mean": reported["value"]}, metric) | {"source": reported["source"]},
                "measured": figure(budget["measured"], metric),
                "adaptive": figure(budget["adaptive"], metric),
                "worst": figure(budget["worst"], metric),
                "impercept": figure(budget["imperceptibility"].get(impercept_metric), impercept_metric),
                "impercept_metric": impercept_metric,
                "time": {"text": fmt.seconds(seconds) if seconds is not None else "—", "value": seconds or ""},
                "unreliable": budget["unreliable"],
            }
        )
    return rows


def copy_images(entry: dict[str, Any], source: Path, target: Path) -> list[dict[str, Any]]:
    """Copy the entry's protected images beside its page, each checked against its SHA-256; the grid's cells."""
    copied = []
    for item in entry.get("protected_images", []):
        file = source.parent / item["file"]
        if not file.is_file() or sha256_file(file) != item["sha256"]:
            raise SiteError(f"{source}: its protected image {item['file']} is missing or does not match its SHA-256")
        destination = target / item["file"]
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, destination)
        copied.append({**item, "src": item["file"]})
    return copied


def image_grid(images: list[dict[str, Any]], settings: list[str]) -> dict[str, Any]:
    names = sorted({i["image_name"] for i in images})
    by_key = {(i["image_name"], i["setting"]): i for i in images}
    return {"settings": settings, "rows": [{"name": n, "cells": [by_key.get((n, s)) for s in settings]} for n in names]}


def render_site(paths: list[Path], out: Path) -> Path:
    """Write ``out/index.html`` and a page per entry; returns the index."""
    env = environment()
    script, policy = script_and_policy()
    protocols: dict[str, dict[str, Any]] = {}
    for path in entry_files(paths):
        entry = read(path)
        protocol = entry["protocol"]
        key = safe_name(protocol["id"])
        name = safe_name(entry["protection"]["name"])
        folder = out / "entries" / key
        page = f"entries/{key}/{name}.html"
        images = copy_images(entry, path, folder)
        settings = [b["setting"] for b in entry["figures"]["budgets"]]
        metric = entry["figures"]["headline_metric"]
        budgets = []
        for budget in entry["figures"]["budgets"]:
            budgets.append(
                {
                    "setting": budget["setting"],
                    "unreliable": budget["unreliable"],
                    "reported": figure({"mean": budget["reported"]["value"]}, metric)
                    | {"source": budget["reported"]["source"]},
                    "measured": figure(budget["measured"], metric),
                    "adaptive": figure(budget["adaptive"], metric),
                    "worst": figure(budget["worst"], metric),
                    "impercept": [(m, figure(r, m)) for m, r in budget["imperceptibility"].items()],
                    "attacks": [
                        {
                            "attacker": a["attacker"],
                            "adaptive": a["adaptive"],
                            "metrics": [(m, figure(r, m)) for m, r in a["metrics"].items()],
                        }
                        for a in budget["attacks"]
                    ],
                    "cost": budget["cost"],
                }
            )
        html = env.get_template("site_entry.html.j2").render(
            csp=policy,
            entry=entry,
            metric=metric,
            budgets=budgets,
            grid=image_grid(images, settings),
            provenance=json.dumps(entry.get("provenance", {}), indent=1),
            identity=json.dumps(entry["protection"].get("identity", {}), indent=1),
        )
        write_atomic(out / page, html.encode())
        group = protocols.setdefault(
            protocol["id"],
            {
                "id": protocol["id"],
                "sha256": protocol.get("sha256", ""),
                "metric": metric,
                "similarity": entry["figures"].get("headline_higher_is_better"),
                "rows": [],
                "entries": 0,
            },
        )
        if group["sha256"] != protocol.get("sha256", ""):
            raise SiteError(f"{path}: protocol {protocol['id']} with another file hash than the other entries")
        group["rows"] += table_rows(entry, page)
        group["entries"] += 1
    groups = sorted(protocols.values(), key=lambda g: g["id"])
    for group in groups:
        group["budgets"] = sorted({r["budget"] for r in group["rows"]}, key=lambda b: float(re.sub(r"^[^=]*=", "", b)))
        # The headline is a similarity of the copy to the clean copy (higher: weaker) or a distance (lower: weaker).
        group["stronger"] = {True: "lower is stronger", False: "higher is stronger"}.get(group["similarity"], "")
    index = out / "index.html"
    write_atomic(
        index,
        env.get_template("site_index.html.j2")
        .render(
            # The one script is this package's own file (never entry data), hashed into the CSP as written.
            csp=policy,
            script=Markup(script),
            protocols=groups,
        )
        .encode(),
    )
    return index
