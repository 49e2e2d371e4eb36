"""The harness layer: spec, plan, execute, executors, the compare driver, the store,
profiling, ``bench perf`` and the CLI.

It stands on ``cloakbench.core`` and the methods (``cloakbench.protections``,
``cloakbench.mimicry``, ``cloakbench.metrics``); nothing below imports it
(docs/ARCHITECTURE.md, "Layers").
"""
