"""`make demo` runs every publishable protection except the fine-tuning family (Makefile, DEMO_METHODS)."""

from __future__ import annotations

import re
from pathlib import Path

from cloakbench.protections import publishable_protections

ROOT = Path(__file__).resolve().parent.parent
#: Made against fine-tuning and judged by the lora/dreambooth attacks; minutes per toy image.
FINE_TUNING_FAMILY = {"aspl", "fsmg"}


def test_the_demo_lists_every_publishable_protection_but_the_fine_tuning_family():
    makefile = (ROOT / "Makefile").read_text()
    listed = set(re.search(r"^DEMO_METHODS = (.+)$", makefile, re.M).group(1).split(","))
    # `none` is always added by the plan; a new protection must join the demo or this family.
    assert listed | {"none"} | FINE_TUNING_FAMILY == set(publishable_protections())
    assert not listed & FINE_TUNING_FAMILY
