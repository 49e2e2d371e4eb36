"""The self-contained HTML report of a run, built from ``rows.csv``, ``manifest.json`` and the artifacts alone.

Entry points: :func:`reports.html.write_report` (``bench report RUN [RUN2 …]``; ``bench compare``
calls it at the end of a run) and :func:`reports.export.export` (``bench plot``: the same
figures as files, the tables as CSV and LaTeX). The report answers first
(:mod:`reports.leaderboard`: leaderboard, worst case over attackers, categories, transfer;
intervals from :mod:`reports.stats`); README, "The report".
"""
