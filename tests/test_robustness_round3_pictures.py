"""Issue #30, bad input round three: pictures that are not plain 8-bit sRGB. An animated WebP/APNG is
protected by its first frame and says so; a 16-bit-per-channel PNG records its reduction to 8 bits;
a wide-gamut ICC profile (Display P3, here a hand-built Adobe-RGB-primaries profile) travels with the
pixels kept in its space, as the artist issue chose for ``bench protect`` (core/images.py,
``manage_colour``). Each note is read back from the sidecar."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.core.images import load_image_file
from tests.support.icc import wide_rgb_profile


def protect(source, out, *extra):
    result = CliRunner().invoke(
        app, ["protect", str(source), "--method", "noise", "--model", "tiny-random", "--out", str(out), *extra]
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "noise" / f"{source.name}.json").read_text())


def frames(count=3, size=(48, 40)):
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)) for _ in range(count)]


@pytest.mark.parametrize("fmt,suffix", [("WEBP", ".webp"), ("PNG", ".png")])
def test_an_animated_picture_says_its_first_frame_is_used(tmp_path, fmt, suffix):
    first, *rest = frames()
    source = tmp_path / f"loop{suffix}"
    first.save(source, format=fmt, save_all=True, append_images=rest, duration=100, loop=0, lossless=True)
    record = protect(source, tmp_path / "out")
    notes = record["intake"]["notes"]
    assert any(f"animated {fmt} (3 frames): the first frame is used" in note for note in notes), notes
    loaded = load_image_file(source, 32, keep_size=True)
    assert np.array_equal(np.round(loaded.pixels.permute(1, 2, 0).numpy() * 255).astype(np.uint8), np.asarray(first))


def png_16bit_rgb(path, array16: np.ndarray):
    """A 48-bit (16 bits per channel) RGB PNG, written by hand: Pillow cannot write one."""
    height, width, _ = array16.shape
    raw = b"".join(b"\0" + array16[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def test_a_16_bit_png_records_its_reduction_to_8_bits(tmp_path):
    rng = np.random.default_rng(1)
    array16 = (rng.random((40, 48, 3)) * 65535).astype(np.uint16)
    source = png_16bit_rgb(tmp_path / "deep.png", array16)
    record = protect(source, tmp_path / "out")
    assert record["intake"]["mode"] == "RGB;16"
    assert any(
        "16 bits per channel (RGB, 48-bit) reduced to 8 bits per channel" in n for n in record["intake"]["notes"]
    )
    loaded = load_image_file(source, 32, keep_size=True)
    levels = np.round(loaded.pixels.permute(1, 2, 0).numpy() * 255).astype(np.int32)
    assert np.abs(levels - (array16 >> 8)).max() <= 1  # the high byte of each sample


def test_an_8_bit_png_has_no_reduction_note(tmp_path):
    source = tmp_path / "plain.png"
    frames(1)[0].save(source)
    loaded = load_image_file(source, 32, keep_size=True)
    assert loaded.source_mode == "RGB" and not loaded.notes


def test_a_wide_gamut_profile_travels_with_its_pixels_and_is_said(tmp_path):
    source = tmp_path / "p3.png"
    frames(1)[0].save(source, icc_profile=wide_rgb_profile())
    out = tmp_path / "out"
    record = protect(source, out)
    assert any("colours kept in the embedded ICC profile's space" in n for n in record["intake"]["notes"])
    with Image.open(out / "noise" / "p3.png.png") as published:
        assert published.info["icc_profile"] == wide_rgb_profile()  # the numbers keep their meaning
