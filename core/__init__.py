"""The core layer: what every method and the harness stand on.

Registry, components and their configs, image intake, model loading, weights lookup,
provenance and the row schema. Nothing here imports a method (protections, mimicry,
metrics) or the harness (plan, execute, store, perf, report, CLI); the layers contract in
``pyproject.toml`` (``[tool.importlinter]``) enforces it. See docs/ARCHITECTURE.md.
"""
