# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
.PHONY: env demo test test-slow bench-test perf-check

env:
	bash scripts/setup_env.sh

# One torch thread: the toy model is too small to gain from more, and a second thread
# fights any other job on a 2-core machine (measured: 5 min vs over an hour).
demo: env
	.venv/bin/bench compare --methods all --out runs/demo --threads 1

test: env
	.venv/bin/python -m pytest

test-slow: env
	.venv/bin/python -m pytest -m slow

bench-test: env
	.venv/bin/python -m pytest tests/benchmarks -m benchmark --benchmark-enable

perf-check: env
	.venv/bin/bench perf --check benchmarks/baseline.json
