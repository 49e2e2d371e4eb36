"""The self-contained HTML report of a run, built from ``rows.csv``, ``manifest.json`` and the artifacts alone.

Entry point: :func:`reports.html.write_report` (``bench report RUN``; ``bench compare`` calls it
at the end of a run).
"""
