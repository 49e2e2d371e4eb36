"""Image intake: every fault of docs/RELIABILITY.md's "Images in" rows, each file made by the test."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cloakbench.core.images import (
    MAX_PIXELS,
    ImageError,
    load_image_file,
    load_images,
    quantize_8bit,
    read_png,
    save_png,
)

SIZE = 64


def gradient_rgb(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None, None]
    array = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 90.0),
        ],
        axis=2,
    )
    return Image.fromarray(array.astype(np.uint8), mode="RGB")


def good_file(folder: Path) -> Path:
    path = folder / "good.png"
    gradient_rgb(80, 80).save(path)
    return path


def png_with_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def assert_refused_and_run_goes_on(folder: Path, bad: Path, reason: str) -> None:
    good_file(folder)
    result = load_images([str(folder)], SIZE)
    assert [image.name for image in result.images] == ["good"]
    assert len(result.skipped) == 1
    assert result.skipped[0].path == str(bad)
    assert str(bad) in result.skipped[0].reason
    assert reason in result.skipped[0].reason


def test_truncated_jpeg_is_refused_not_grey_filled(tmp_path):
    bad = tmp_path / "cut.jpg"
    gradient_rgb(128, 128).save(bad, quality=95)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert_refused_and_run_goes_on(tmp_path, bad, "truncated or corrupt")


def test_text_file_named_png_is_refused(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n")
    assert_refused_and_run_goes_on(tmp_path, bad, "not a PNG, JPEG or WebP image")


def test_zero_byte_file_is_refused(tmp_path):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    assert_refused_and_run_goes_on(tmp_path, bad, "empty file (0 bytes)")


def test_huge_header_is_refused_before_decoding_with_the_numbers(tmp_path):
    bad = tmp_path / "bomb.png"
    png_with_header(bad, 20_000, 20_000)
    assert_refused_and_run_goes_on(
        tmp_path, bad, f"20000x20000 = 400,000,000 pixels exceeds the limit of {MAX_PIXELS:,}"
    )


def test_other_formats_are_refused_by_content(tmp_path):
    bad = tmp_path / "picture.png"  # a GIF wearing a .png name
    gradient_rgb(64, 64).convert("P").save(bad, format="GIF")
    assert_refused_and_run_goes_on(tmp_path, bad, "format GIF is not accepted")


def test_seven_by_seven_is_refused_as_too_small(tmp_path):
    bad = tmp_path / "tiny.png"
    gradient_rgb(7, 7).save(bad)
    assert_refused_and_run_goes_on(tmp_path, bad, "7x7 is too small")


def test_exif_rotation_is_applied(tmp_path):
    upright = gradient_rgb(64, 96)  # portrait
    path = tmp_path / "rotated.jpg"
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(path, exif=exif, quality=100)
    loaded = load_image_file(path, SIZE)
    assert any("EXIF orientation 6" in note for note in loaded.notes)
    assert loaded.original_size == (96, 64)  # the stored (sideways) size is what the file holds
    expected = load_image_file(
        _save(
            tmp_path / "upright.png",
            upright.transpose(Image.Transpose.ROTATE_180).transpose(Image.Transpose.ROTATE_180),
        ),
        SIZE,
    )
    assert torch.mean(torch.abs(loaded.pixels - expected.pixels)) < 0.03


def _save(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def test_cmyk_is_converted_to_rgb(tmp_path):
    path = _save(tmp_path / "cmyk.jpg", gradient_rgb(64, 64).convert("CMYK"))
    loaded = load_image_file(path, SIZE)
    assert "CMYK converted to RGB" in loaded.notes
    reference = load_image_file(_save(tmp_path / "ref.png", gradient_rgb(64, 64)), SIZE)
    assert torch.mean(torch.abs(loaded.pixels - reference.pixels)) < 0.05


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    array = np.zeros((64, 64), dtype=np.uint16)
    array[:, :32] = 65535
    array[:, 32:] = 32768
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    loaded = load_image_file(path, SIZE)
    assert any("16-bit" in note for note in loaded.notes)
    assert loaded.pixels[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert round(loaded.pixels[0, 0, 40].item() * 255) == 128  # 32768/65535*255 = 127.5 -> 128, not 255


def test_rgba_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 32, 64))  # left half fully transparent
    loaded = load_image_file(_save(tmp_path / "alpha.png", rgba), SIZE)
    assert "alpha composited on white" in loaded.notes
    assert loaded.pixels[:, 10, 5].tolist() == [1.0, 1.0, 1.0]
    assert loaded.pixels[:, 10, 50].tolist() == [1.0, 0.0, 0.0]


def test_palette_and_grayscale_become_rgb(tmp_path):
    palette = load_image_file(_save(tmp_path / "pal.png", gradient_rgb(64, 64).convert("P")), SIZE)
    gray = load_image_file(_save(tmp_path / "gray.png", gradient_rgb(64, 64).convert("L")), SIZE)
    assert "palette converted to RGB" in palette.notes
    assert "grayscale converted to RGB" in gray.notes
    assert palette.pixels.shape == gray.pixels.shape == (3, SIZE, SIZE)
    assert torch.equal(gray.pixels[0], gray.pixels[1]) and torch.equal(gray.pixels[1], gray.pixels[2])


def test_odd_size_is_resized_and_centre_cropped_with_a_record(tmp_path):
    loaded = load_image_file(_save(tmp_path / "odd.png", gradient_rgb(513, 771)), SIZE)
    assert loaded.pixels.shape == (3, SIZE, SIZE)
    assert loaded.original_size == (513, 771)
    assert any("513x771" in note and f"centre-cropped to {SIZE}x{SIZE}" in note for note in loaded.notes)


def test_identity_is_the_pixel_hash_not_the_name_and_order_is_sorted(tmp_path):
    image = gradient_rgb(70, 70)
    _save(tmp_path / "b.png", image)
    _save(tmp_path / "a.png", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    _save(tmp_path / "c_copy.png", image)  # same pixels as b under another name
    result = load_images([str(tmp_path)], SIZE)
    assert [im.name for im in result.images] == ["a", "b"]
    assert "duplicate" in result.skipped[0].reason
    renamed = load_image_file(_save(tmp_path / "zzz.png", image), SIZE, name="zzz")
    assert renamed.pixel_hash == result.images[1].pixel_hash


def test_samples_are_the_scikit_image_photos():
    result = load_images(["samples"], SIZE)
    assert [im.name for im in result.images] == ["astronaut", "chelsea", "coffee", "rocket"]
    assert all(im.pixels.shape == (3, SIZE, SIZE) for im in result.images)


def test_png_round_trip_is_exact_after_rounding(tmp_path):
    values = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    quantised = quantize_8bit(values)
    assert torch.all(torch.abs(quantised - values) <= 0.5 / 255 + 1e-7)  # rounding, not truncation
    path = save_png(quantised, tmp_path / "x.png")
    assert torch.equal(read_png(path), quantised)
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic write leaves no temp file


def test_missing_path_is_reported_and_not_fatal(tmp_path):
    result = load_images([str(tmp_path / "nope.png"), "samples"], SIZE)
    assert len(result.images) == 4
    assert "no such file" in result.skipped[0].reason


def test_working_size_must_be_a_multiple_of_eight(tmp_path):
    with pytest.raises(ValueError, match="multiple of 8"):
        load_image_file(good_file(tmp_path), 60)


def test_image_error_names_the_file(tmp_path):
    bad = tmp_path / "zero.webp"
    bad.write_bytes(b"")
    with pytest.raises(ImageError, match=str(bad)):
        load_image_file(bad, SIZE)
