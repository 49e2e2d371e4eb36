"""The HTML page of ``bench check``: one self-contained file (pictures inlined), readable offline.

It shows the honest sentence about the model, the table the console printed, every metric of
every row (each attack setting, both views, both pairs), and the pictures: the published file
and the original, the perturbation amplified, and what each attack made of both.
"""

from __future__ import annotations

import html
from typing import Any

from cloakbench.reports.format import number
from cloakbench.reports.grids import AMPLIFY, perturbation, to_data_uri

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    ".note{background:#fff6d5;padding:.6em;border-left:4px solid #e0b000}figure{display:inline-block;margin:.4em}"
    "figcaption{font-size:80%;max-width:260px}"
)


def _cell(value: Any, metric: str = "") -> str:
    return "–" if value is None else html.escape(number(value, metric))


def render_check_page(result, table: list[dict], columns: list[tuple[str, str]], command: str) -> str:
    """The page (a string); ``table``/``columns`` are the console table's rows and ``(key, header)`` pairs."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>bench check</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>bench check: {html.escape(result.protected)}</h1>",
        f"<p>Original: {html.escape(result.original)} ({result.size[1]}x{result.size[0]}). "
        f"Model: {html.escape(str(result.model.get('name')))}. Command: <code>{html.escape(command)}</code></p>",
        f"<p class='note'>{html.escape(result.target.sentence)}</p>",
        "<h2>Summary</h2><p>L∞ in 8-bit levels; PSNR (dB) and SSIM of the file against the original after the "
        "same transform (higher: less visible). Attack columns: SSIM between the attack's output on the "
        "protected file and on the original (1: the protection changed nothing; lower: stronger), mean over "
        "the attack's settings.</p><table><tr>",
    ]
    parts += [f"<th>{html.escape(header.replace(chr(10), ' '))}</th>" for _, header in columns]
    parts.append("</tr>")
    for row in table:
        parts.append(
            "<tr>"
            + "".join(
                f"<td>{_cell(row.get(key), key) if key != 'file' else html.escape(row['file'])}</td>"
                for key, _ in columns
            )
            + "</tr>"
        )
    parts.append("</table>")
    if result.skipped:
        parts.append("<p>Not run: " + "; ".join(html.escape(s) for s in result.skipped) + "</p>")
    parts.append("<h2>Pictures</h2>")
    pictures = dict(result.images)
    if "protected" in pictures and "original" in pictures:
        pictures = {
            "published file": pictures.pop("protected"),
            "original": pictures.pop("original"),
            f"perturbation, amplified ×{AMPLIFY:g}": perturbation(
                result.images["protected"], result.images["original"]
            ),
            **pictures,
        }
    for caption, pixels in pictures.items():
        parts.append(
            f"<figure><img src='{to_data_uri(pixels)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Every measurement</h2><table><tr>")
    keys = ("file", "view", "attack", "setting", "pair", "metric", "value", "status", "note")
    parts += [f"<th>{key}</th>" for key in keys]
    parts.append("</tr>")
    for row in result.rows:
        cells = []
        for key in keys:
            item = row.get(key, "")
            cells.append(_cell(item, row.get("metric", "")) if key == "value" else html.escape(str(item)))
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
