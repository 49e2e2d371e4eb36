#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
# torch/torchvision are installed first and pinned to the pair that installs from this
# machine's registries and imports together (README: "Why torch 2.14.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install --quiet -e ".[test,ray,metrics]" --config-settings editable_mode=strict 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, diffusers, lpips, dlib, cv2, cloakbench.bench.cli.app" \
  || { echo "environment check failed: see the pip output above" >&2; exit 1; }
