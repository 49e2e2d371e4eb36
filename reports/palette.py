"""One colour per protection, the same in every report and figure.

A protection's colour comes from its position in the protection registry
(``cloakbench.protections.PROTECTIONS``, registration order), never from the run's plan order,
so AdvDM is the same blue in a run of three methods and in a run of ten. The first nine
protections take matplotlib's ``tab10`` hues but its grey (distinct, readable in print), the
next nine the light hues of ``tab20``; a name the registry does not know (a renamed method in an old run)
takes a colour from a hash of its name, stable across runs. ``none`` (the unprotected
reference) is dark grey.
"""

from __future__ import annotations

import functools
import zlib

from matplotlib import colormaps
from matplotlib.colors import to_hex

from cloakbench.protections import PROTECTIONS

REFERENCE = "none"
REFERENCE_COLOR = "#4d4d4d"


@functools.cache
def _palette() -> tuple[str, ...]:
    # tab10's grey (index 7) and tab20's light grey are left out: grey is the reference's.
    dark = [to_hex(colormaps["tab10"](i)) for i in range(10) if i != 7]
    light = [to_hex(colormaps["tab20"](2 * i + 1)) for i in range(10) if i != 7]
    return tuple(dark + light)


@functools.cache
def _registry_order() -> tuple[str, ...]:
    return tuple(name for name in PROTECTIONS.names() if name != REFERENCE)


def method_color(name: str) -> str:
    """``#rrggbb`` of the protection ``name``."""
    if name == REFERENCE:
        return REFERENCE_COLOR
    palette, order = _palette(), _registry_order()
    if name in order:
        return palette[order.index(name) % len(palette)]
    return palette[zlib.crc32(name.encode("utf-8")) % len(palette)]


def colors(names) -> dict[str, str]:
    return {name: method_color(name) for name in names}
