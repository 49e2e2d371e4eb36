"""docs/CONTRIBUTING.md holds: a new protection is one file (and its generated golden slice), and a
direction that bypasses the engine's hooks is refused when its class is defined."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloakbench.protections.engine import PGDProtection

ROOT = Path(__file__).resolve().parent.parent
#: The registry-wide tests a new protection must pass (each iterates over the whole registry).
REGISTRY_WIDE = [
    "tests/test_protections.py",
    "tests/test_golden_slices.py",
    "tests/test_robustness_ranges.py",
    "tests/test_demo_target.py",
    "tests/test_listing.py",
]


@pytest.mark.slow  # two subprocesses, about 2 min: `make test-slow`
def test_a_throwaway_protection_passes_every_registry_wide_test_with_no_other_file_edited(tmp_path):
    golden = tmp_path / "slices.json"
    shutil.copy(ROOT / "tests" / "golden" / "slices.json", golden)
    env = {**os.environ, "CLOAKBENCH_GOLDEN": str(golden), "OMP_NUM_THREADS": "1"}
    # Step 1 of the guide: generate the new method's golden slice (here into a copy of the file).
    make_slice = (
        "import runpy, sys; import tests.support.throwaway; sys.argv = ['update_golden.py', '--out', sys.argv[1]]; "
        "runpy.run_path('scripts/update_golden.py', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", make_slice, str(golden)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: a stored slice elsewhere would not match
    assert '"throwaway"' in golden.read_text(), done.stdout[-2000:] + done.stderr[-2000:]
    # Step 2: the registry-wide tests, with the throwaway registered, pass as they are. (The whole-registry
    # tests run in full; of the per-entry ones, the throwaway's own.)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "tests.support.throwaway",
            *REGISTRY_WIDE,
            "-k",
            "throwaway or every or demo or stored or range or golden_model",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # The per-entry tests ran for it: its contract, budget and determinism, and its golden slice.
    assert "test_contract_budget_determinism_and_batching[throwaway] PASSED" in done.stdout
    assert "test_output_matches_its_golden_slice[protections:throwaway] PASSED" in done.stdout
    assert " failed" not in done.stdout


def test_a_direction_that_bypasses_the_hooks_is_refused_at_class_definition():
    import torch

    with pytest.raises(TypeError, match=r"autograd.grad\(\): call self.input_gradient"):

        class Bypass(PGDProtection):
            def direction(self, state, adversarial, draws):
                latents = state.model.encode(adversarial)
                (gradient,) = torch.autograd.grad(latents.sum(), adversarial)
                return gradient, latents.sum()

    with pytest.raises(TypeError, match=r"losses.image_latent\(\): call self.image_latent"):
        from cloakbench.protections import losses

        class Bypass2(PGDProtection):
            def direction(self, state, adversarial, draws):
                latents = losses.image_latent(state.model, adversarial, draws.latent_noise)
                return self.input_gradient(state, adversarial, latents, latents), latents.sum()
