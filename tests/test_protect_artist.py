"""``bench protect`` as an artist uses it: metadata kept, colours handled, formats, a readable
sidecar, resume, the dry run, progress lines and the honest sentence about the model."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image, IptcImagePlugin
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.core.metadata import ARTIST, COPYRIGHT, ORIENTATION, jpeg_with_segment
from tests.support.icc import grey_profile, wide_rgb_profile

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:rights><rdf:Alt>'
    b'<rdf:li xml:lang="x-default">(c) 2024 Ada Painter</rdf:li></rdf:Alt></dc:rights></rdf:Description>'
    b"</rdf:RDF></x:xmpmeta>"
)


def smooth(height: int, width: int, seed: int = 0) -> np.ndarray:
    coarse = (np.random.default_rng(seed).random((5, 7, 3)) * 255).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def iptc_app13(copyright_notice: str, byline: str) -> bytes:
    """A Photoshop APP13 payload holding IPTC 2:116 (copyright) and 2:80 (by-line)."""
    records = b""
    for dataset, text in ((116, copyright_notice), (80, byline)):
        value = text.encode()
        records += b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(value)) + value
    if len(records) % 2:
        records += b"\0"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(records)) + records
    return b"Photoshop 3.0\x00" + resource


def artist_jpeg(path, *, height=48, width=72, orientation=6, icc=None, xmp=XMP, iptc=True):
    """A JPEG as a camera or editor writes it: EXIF Artist/Copyright/orientation, ICC, XMP, IPTC."""
    image = Image.fromarray(smooth(height, width))
    exif = image.getexif()
    exif[ARTIST], exif[COPYRIGHT], exif[ORIENTATION] = "Ada Painter", "(c) 2024 Ada Painter", orientation
    buffer = io.BytesIO()
    options = {"exif": exif.tobytes(), "quality": 95}
    if icc is not None:
        options["icc_profile"] = icc
    if xmp is not None:
        options["xmp"] = xmp
    image.save(buffer, format="JPEG", **options)
    data = buffer.getvalue()
    if iptc:
        data = jpeg_with_segment(data, 0xED, iptc_app13("(c) 2024 Ada Painter", "Ada Painter"))
    path.write_bytes(data)
    return path


def invoke(*args):
    return CliRunner().invoke(app, ["protect", *map(str, args)])


def upright_levels(path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as opened:
        return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("fmt,suffix", [("png", ".png"), ("webp-lossless", ".webp"), ("jpeg", ".jpg")])
def test_exif_icc_xmp_and_iptc_travel_to_every_format(tmp_path, fmt, suffix):
    source = artist_jpeg(tmp_path / "x.jpg", icc=wide_rgb_profile())
    out = tmp_path / "out"
    result = invoke(source, "--method", "noise", "--model", "tiny-random", "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    published = out / "noise" / f"x.jpg{suffix}"
    with Image.open(published) as opened:
        exif = opened.getexif()
        assert exif[ARTIST] == "Ada Painter" and exif[COPYRIGHT] == "(c) 2024 Ada Painter"
        assert exif.get(ORIENTATION) == 1  # the pixels are upright: a kept 6 would rotate them again
        assert opened.size == (48, 72)  # orientation 6 applied: 72x48 stored, 48 wide x 72 high shown
        assert opened.info["icc_profile"] == wide_rgb_profile()
        xmp = opened.info.get("xmp") or b""
        assert b"(c) 2024 Ada Painter" in (xmp if isinstance(xmp, bytes) else xmp.encode())
        if fmt == "jpeg":  # IPTC's APP13 block travels verbatim into a JPEG
            iptc = IptcImagePlugin.getiptcinfo(opened)
            assert iptc[(2, 116)] == b"(c) 2024 Ada Painter" and iptc[(2, 80)] == b"Ada Painter"
    record = json.loads((out / "noise" / "x.jpg.json").read_text())
    assert "ICC profile 'Test Wide RGB'" in record["summary"]["metadata"]
    assert any("kept in the embedded ICC profile's space" in note for note in record["intake"]["notes"])
    assert record["intake"]["metadata"]["iptc_copyright"] == "(c) 2024 Ada Painter"


def test_iptc_without_xmp_becomes_xmp_rights_in_a_png(tmp_path):
    source = artist_jpeg(tmp_path / "x.jpg", xmp=None)
    out = tmp_path / "out"
    assert invoke(source, "--method", "none", "--model", "tiny-random", "--out", out).exit_code == 0
    with Image.open(out / "none" / "x.jpg.png") as opened:
        assert b"<dc:rights>" in opened.info["xmp"] and b"(c) 2024 Ada Painter" in opened.info["xmp"]
    record = json.loads((out / "none" / "x.jpg.json").read_text())
    assert any("written as XMP" in note for note in record["metadata"]["notes"])


def test_strip_metadata_drops_everything_and_converts_the_colours_to_srgb(tmp_path):
    source = artist_jpeg(tmp_path / "x.jpg", icc=wide_rgb_profile())
    out = tmp_path / "out"
    result = invoke(source, "--method", "none", "--model", "tiny-random", "--strip-metadata", "--out", out)
    assert result.exit_code == 0, result.output
    with Image.open(out / "none" / "x.jpg.png") as opened:
        assert "icc_profile" not in opened.info and "xmp" not in opened.info
        assert not len(opened.getexif())
        stripped = np.asarray(opened.convert("RGB"), dtype=np.int16)
    # Converted from the wide profile to sRGB: the numbers move (without the profile they would lie).
    assert np.abs(stripped - upright_levels(source)).max() > 8
    record = json.loads((out / "none" / "x.jpg.json").read_text())
    assert any("converted from ICC profile 'Test Wide RGB' to sRGB" in n for n in record["intake"]["notes"])
    assert record["summary"]["metadata"] == "removed (--strip-metadata)"


def test_a_grey_profile_is_converted_and_said(tmp_path):
    image = Image.fromarray(smooth(40, 56)[..., 0])
    image.save(tmp_path / "g.png", icc_profile=grey_profile())
    out = tmp_path / "out"
    assert invoke(tmp_path / "g.png", "--method", "none", "--model", "tiny-random", "--out", out).exit_code == 0
    record = json.loads((out / "none" / "g.png.json").read_text())
    assert any("to sRGB (its space is not RGB)" in note for note in record["intake"]["notes"])
    with Image.open(out / "none" / "g.png.png") as opened:
        assert "icc_profile" not in opened.info  # a grey profile cannot describe RGB pixels


def test_the_sidecar_summary_says_what_a_person_needs_and_a_rerun_skips(tmp_path):
    source = artist_jpeg(tmp_path / "x.jpg", icc=wide_rgb_profile(), height=40, width=200)
    out = tmp_path / "out"
    args = (source, "--model", "tiny-random", "--quick", "--max-pixels", "4096", "--out", out)
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "random weights" in first.output and "--model <local diffusers folder>" in first.output
    assert "estimate: about" in first.output and "[1/1] sds- x.jpg" in first.output  # line per picture
    sidecar = out / "sds-" / "x.jpg.json"
    record = json.loads(sidecar.read_text())
    summary = record["summary"]
    assert summary["model"] == "tiny-random" and summary["model_is_real"] is False
    assert "random weights" in summary["model_note"] and "bench models" in summary["model_note"]
    assert summary["budget"] == "at most 16/255 per pixel value"
    assert 20 < summary["psnr_db"] < 60 and 0 < summary["ssim"] < 1
    assert any("NOT a real protection" in item for item in summary["not_evaluated"])
    assert any("bench check" in item for item in summary["not_evaluated"])
    grid = record["protected_as"]["grid"]
    assert "origins" not in record["protected_as"] or not isinstance(record["protected_as"].get("origins"), list)
    assert len(grid["rows"]) * len(grid["columns"]) == record["protected_as"]["tiles"] > 1
    before = (out / "sds-" / "x.jpg.png").stat().st_mtime_ns
    second = invoke(*args)
    assert second.exit_code == 0 and "already protected" in second.output, second.output
    assert (out / "sds-" / "x.jpg.png").stat().st_mtime_ns == before
    # A damaged output is not "complete": the next run redoes it.
    (out / "sds-" / "x.jpg.png").write_bytes(b"half a file")
    third = invoke(*args)
    assert third.exit_code == 0 and "already protected" not in third.output
    from cloakbench.bench.sidecar import file_sha256

    assert json.loads(sidecar.read_text())["output_sha256"] == file_sha256(out / "sds-" / "x.jpg.png")
    with Image.open(out / "sds-" / "x.jpg.png") as opened:
        assert opened.size == (40, 200)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    source = artist_jpeg(tmp_path / "x.jpg", height=40, width=200)
    out = tmp_path / "out"
    result = invoke(source, "--model", "tiny-random", "--max-pixels", "4096", "--dry-run", "--out", out)
    assert result.exit_code == 0, result.output
    for words in ("tiles", "estimated time: about", "estimated peak memory", "one measured step"):
        assert words in result.output, words
    assert not out.exists()


def test_jpeg_output_warns_and_measures_the_reencoding(tmp_path):
    source = artist_jpeg(tmp_path / "x.jpg")
    out = tmp_path / "out"
    result = invoke(
        source, "--method", "noise", "--model", "tiny-random", "--format", "jpeg", "--quality", "80", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "weakens it" in result.output
    record = json.loads((out / "noise" / "x.jpg.json").read_text())
    assert record["reencoding"]["quality"] == 80 and record["reencoding"]["change_255"] > 0
    assert 0 < record["reencoding"]["perturbation_kept"] < 1
    assert record["summary"]["format"] == "jpeg (quality 80)"


def test_help_shows_every_default_and_the_eps_steps_defaults_are_the_methods():
    import click
    import typer.main

    from cloakbench.bench.cli.protect import DEFAULT_EPS_STEPS
    from cloakbench.protections import PROTECTIONS

    config = PROTECTIONS.get("sds-").Config()
    assert f"eps {config.eps:g}, steps {config.steps}" in DEFAULT_EPS_STEPS
    command = typer.main.get_command(app).commands["protect"]
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag:
            text = param.help or ""
            shown = (
                param.required or "[default:" in text or (param.show_default is not False and param.default is not None)
            )
            assert shown, f"{param.opts[0]} shows no default"
    result = CliRunner().invoke(app, ["protect", "--help"], terminal_width=80)
    assert result.exit_code == 0
    flat = " ".join(result.output.replace("│", " ").split())
    for words in ("default: sds-", "default: toy", "eps 16, steps 100", "default: png", "default: 95", "--dry-run"):
        assert words in flat, words


def test_full_size_ssim_in_strips_is_the_whole_picture_value():
    import torch

    from cloakbench.bench.full_metrics import full_size
    from cloakbench.metrics import METRICS

    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 3, 300, 90, generator=generator)
    changed = (clean + 0.3 * torch.rand(clean.shape, generator=generator)).clamp(0, 1)
    ssim = METRICS.get("ssim")()
    whole = float(ssim(changed, clean))
    assert float(full_size(ssim, changed, clean, strip_rows=37)) == pytest.approx(whole, abs=1e-6)
    assert whole < 0.99  # a real change, so equality says something
