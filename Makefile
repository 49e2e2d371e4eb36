# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
.PHONY: env lint demo test test-slow bench-test perf-check paper-table leaderboard

env:
	bash scripts/setup_env.sh

# Every publishable protection against SDEdit, except the fine-tuning family (aspl, fsmg):
# those fine-tune a surrogate for every image (over 10 min per toy image at their reference
# defaults on this CPU) and are judged by the lora/dreambooth attacks (docs/MIMICRY.md,
# "Fine-tuning"). The list comes from the registry (protections.demo_protections: each class
# declares its family), so a new protection joins the demo with no edit here.
# One torch thread: the toy model is too small to gain from more, and a second thread
# fights any other job on a 2-core machine (measured: 5 min vs over an hour).
DEMO_METHODS = $$(.venv/bin/python -c 'from cloakbench.protections import demo_protections; print(",".join(demo_protections()))')
demo: env
	.venv/bin/bench compare --methods "$(DEMO_METHODS)" --out runs/demo --threads 1

# The project's habits, checked on every `make test` (and by pre-commit): lint, format, the
# import layers (from the checkout), types (mypy, with the allowance in pyproject.toml).
lint: env
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	.venv/bin/mypy

# Two worker processes of one torch thread each: the two cores, without threads fighting.
test: lint
	.venv/bin/python -m pytest -n 2

test-slow: env
	.venv/bin/python -m pytest -m slow

bench-test: env
	.venv/bin/python -m pytest tests/benchmarks -m benchmark --benchmark-enable

perf-check: env
	.venv/bin/bench perf --check benchmarks/baseline.json

# The shape of Xue et al.'s main table on the toy model (configs/paper_table.toml): every
# protection x SDEdit and inpainting x eps 4/8/16 x categories x 3 seeds. QUICK=1 shrinks
# every step count (--quick) into its own run folder: a smoke check of the same grid.
paper-table: env
	.venv/bin/python configs/paper_table_data.py runs/paper-table-data
	.venv/bin/bench compare --config configs/paper_table.toml --threads 1 $(if $(QUICK),--quick --out runs/paper-table-quick,)

# The v1-toy leaderboard protocol (protocols/v1-toy.toml) for every protection make demo runs (the
# registry's list: the fine-tuning family, over 10 min per toy image, is left out), entries under
# leaderboard/v1-toy/, the static site in site/. Resumable (runs/leaderboard/v1-toy).
leaderboard: env
	.venv/bin/bench leaderboard run --protocol v1-toy --threads 1
	.venv/bin/bench leaderboard render leaderboard/v1-toy --out site
