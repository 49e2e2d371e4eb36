"""`make demo` runs every publishable protection but the fine-tuning family, read from the registry."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from cloakbench.protections import PROTECTIONS, demo_protections, publishable_protections

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_is_every_publishable_protection_but_the_fine_tuning_family():
    fine_tuning = {n for n in publishable_protections() if PROTECTIONS.get(n).family == "fine-tuning"}
    assert fine_tuning == {"aspl", "fsmg"}  # Anti-DreamBooth's methods declare their family
    assert set(demo_protections()) == set(publishable_protections()) - fine_tuning - {"none"}
    # The order of a run's cells and rows is the order given: the registry's.
    assert demo_protections() == [n for n in PROTECTIONS.names() if n in demo_protections()]


def test_the_makefile_reads_the_demo_list_from_the_registry():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M).group(1)
    assert "$(DEMO_METHODS)" in recipe
    # What make would expand the list to, run through the shell exactly as make does.
    definition = re.search(r"^DEMO_METHODS = (.+)$", makefile, re.M).group(1).replace("$$", "$")
    listed = subprocess.run(
        ["bash", "-c", f"echo {definition}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    # A fresh process registers the package's own protections (a test may have added one more).
    own = [n for n in demo_protections() if PROTECTIONS.get(n).__module__.startswith("cloakbench.")]
    assert listed == ",".join(own)
