"""Hand-built ICC v2 profiles for tests: a wide-gamut RGB (Adobe RGB primaries) and a grey one.

No profile ships with Pillow except LittleCMS's built-in sRGB, and a test of "colours kept
in the profile's space" needs a profile whose space differs from sRGB. These are minimal
matrix/TRC display profiles (ICC.1:2001-04, sections 6.5 and 10).
"""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256)) + b"\0\0"


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67


def _text(text: str) -> bytes:
    return b"text" + b"\0" * 4 + text.encode("ascii") + b"\0"


def build_profile(space: bytes, description: str, tags: list[tuple[bytes, bytes]]) -> bytes:
    tags = [(b"desc", _desc(description)), (b"cprt", _text("no copyright, test data")), *tags]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, data = b"", b""
    for signature, body in tags:
        while (offset + len(data)) % 4:
            data += b"\0"
        entries += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    while len(data) % 4:
        data += b"\0"
    size = 128 + table_size + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntr"
        + space
        + b"XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 4  # platform
        + b"\0" * 4  # flags
        + b"\0" * 8  # manufacturer, model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual intent
        + _s15(D50[0])
        + _s15(D50[1])
        + _s15(D50[2])
        + b"\0" * 4  # creator
        + b"\0" * 16  # profile id
        + b"\0" * 28
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + entries + data


def wide_rgb_profile() -> bytes:
    """Adobe RGB (1998) primaries adapted to D50, gamma 2.2: saturated colours differ from sRGB."""
    return build_profile(
        b"RGB ",
        "Test Wide RGB",
        [
            (b"wtpt", _xyz(*D50)),
            (b"rXYZ", _xyz(0.6097, 0.3111, 0.0195)),
            (b"gXYZ", _xyz(0.2053, 0.6257, 0.0609)),
            (b"bXYZ", _xyz(0.1492, 0.0632, 0.7446)),
            (b"rTRC", _curve(2.2)),
            (b"gTRC", _curve(2.2)),
            (b"bTRC", _curve(2.2)),
        ],
    )


def grey_profile() -> bytes:
    """A grey display profile, gamma 1.8 (not RGB: an RGB output cannot carry it)."""
    return build_profile(b"GRAY", "Test Grey 1.8", [(b"wtpt", _xyz(*D50)), (b"kTRC", _curve(1.8))])
