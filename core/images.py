"""Image intake: every image enters through :func:`load_images` (docs/RELIABILITY.md, "Images in").

The loader opens PNG, JPEG and WebP by content (never by extension), forces a full
decode (a truncated file is an error, never grey-filled), refuses decompression bombs
from the header before decoding, opens regular files only (a FIFO would block; a folder is
said to be one), reads no hidden file or folder (``.ipynb_checkpoints/``) and no output folder
(a ``bench compare`` run folder, ``bench protect``'s ``--out``) inside the inputs, takes an
animated file's first frame (noted), applies EXIF orientation, composites alpha on white,
scales 16-bit to 8-bit explicitly (a 16-bit RGB PNG's reduction noted), converts CMYK / palette / grayscale to RGB, and
brings each image to the model's square working size by a recorded transform (resize
the short side, centre crop) — or, with ``keep_size=True`` (``bench protect``), keeps it at
its own size and aspect ratio. ``bench protect`` also asks for the file's metadata (EXIF,
ICC, XMP, IPTC: :mod:`cloakbench.core.metadata`) and for its colours to be handled in the
embedded profile's space or converted to sRGB (``colour=``), each decision in the notes. Images are identified by the SHA-256 of their working
pixels, not by file name. A bad file is skipped with its path and reason; the others go on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cloakbench.core.io import write_atomic
from cloakbench.core.metadata import SourceMetadata, read_metadata

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP"}
MAX_PIXELS = 64_000_000  # refuse bigger headers before decoding (a 20k x 20k bomb is 400 M)
MIN_SIDE = 32  # below this a picture carries too little to protect or attack
WHITE = (255, 255, 255)
# The default sample set: colour photos that ship inside scikit-image (no download).
# The toy model never trains on these, so the demo evaluates on unseen pictures.
SAMPLE_NAMES = ("astronaut", "chelsea", "coffee", "rocket")


class ImageError(ValueError):
    """A file that cannot be used as an input image; the message names the path and reason."""


@dataclass
class LoadedImage:
    """One input image at working size.

    ``pixels`` is ``(3, S, S)`` float32 in ``[0, 1]``; ``pixel_hash`` the SHA-256 of
    those pixels as 8-bit RGB (the image's identity); ``notes`` record every
    normalisation applied (alpha composited, 16-bit scaled, EXIF rotation, resize/crop).
    """

    name: str
    source: str
    pixels: torch.Tensor
    pixel_hash: str
    original_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    #: The decoded file's format and Pillow mode before conversion (e.g. ``PNG``, ``I;16``, ``RGBA``).
    source_format: str = ""
    source_mode: str = ""
    #: What intake did to the size: ``None`` when the picture kept its own size.
    resized: str | None = None
    #: The source's EXIF/ICC/XMP/IPTC when intake was asked to keep them (``bench protect``).
    metadata: SourceMetadata | None = None
    #: Width and height after EXIF orientation, before any resize: the picture as a viewer shows it
    #: (``original_size`` is the stored orientation). A mask is drawn on this picture.
    upright_size: tuple[int, int] | None = None

    def intake_record(self) -> dict:
        """What intake did to this picture, for sidecars and manifests (JSON-ready)."""
        return {
            "source": self.source,
            "format": self.source_format,
            "mode": self.source_mode,
            "original_size": list(self.original_size),
            "size": [int(self.pixels.shape[-1]), int(self.pixels.shape[-2])],
            "resized": self.resized,
            "notes": list(self.notes),
            "metadata": self.metadata.record() if self.metadata is not None else None,
        }


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class IntakeResult:
    images: list[LoadedImage]
    skipped: list[Skipped]

    def batch(self) -> torch.Tensor:
        """All images stacked as ``(N, 3, S, S)``."""
        return torch.stack([image.pixels for image in self.images])


def check_images(images: torch.Tensor, owner: str, *, multiple_of: int = 1) -> None:
    """Refuse anything but ``(N, 3, H, W)`` float images in ``[0, 1]`` (no silent clamping).

    The one input check of the image contract (docs/ARCHITECTURE.md, "Contracts"), used by
    protections (``multiple_of=8``: the VAE downsamples by 8) and mimicry attacks. The
    message starts with ``owner`` so the user knows which component refused.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{owner}: expected images of shape (N, 3, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{owner}: expected float images in [0, 1], got dtype {images.dtype}")
    if images.shape[-1] % multiple_of or images.shape[-2] % multiple_of:
        raise ValueError(
            f"{owner}: image sides must be multiples of {multiple_of} (the VAE downsamples by "
            f"{multiple_of}), got {tuple(images.shape[-2:])}"
        )
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0 or bool(images.isnan().any()):
        raise ValueError(f"{owner}: images must lie in [0, 1]; got values in [{low:.4g}, {high:.4g}]")


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round (not truncate) to the nearest ``k/255``: what a saved PNG will hold.

    Rounding keeps ``|δ|∞ <= eps/255`` for integer ``eps``; truncation (the reference's
    choice) lets it reach ``(eps+1)/255``.
    """
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


def protection_batch(pixels: list[torch.Tensor]) -> torch.Tensor:
    """``(N, 3, H, W)``: the layout in which images enter a protection, one or many alike.

    A dense channels-last copy, whatever view the decoder left (an RGB PNG's HWC buffer read as
    CHW, an RGBA file's first three planes, a tile cut from a picture). The CPU and GPU kernels
    choose their memory layout, and so their rounding, by the input's strides, and PGD's
    ``sign()`` carries a last-bit difference on to whole pixel steps, so without one canonical
    layout the same pixels would be protected differently by how they were read, or by whether
    they came alone or in a batch (a slice of a batch keeps the batch's strides). Channels-last,
    because every operation on a decoded view already produced it (measured: against the
    decoded view itself only the encoder attack and SDS-z, which encode the clean image as
    given, move; docs/PERFORMANCE.md, "Batching").
    """
    return torch.stack(pixels).contiguous(memory_format=torch.channels_last)


def to_uint8_array(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8, rounding."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got {tuple(image.shape)}")
    array = torch.round(image.detach().float().clamp(0, 1) * 255.0).to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def from_uint8_array(array: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0


def pixel_hash(image: torch.Tensor) -> str:
    array = to_uint8_array(image)
    digest = hashlib.sha256()
    digest.update(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8_array(image), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Save a ``(3, H, W)`` image in [0, 1] as an 8-bit RGB PNG, atomically."""
    write_atomic(Path(path), png_bytes(image))
    return Path(path)


def read_png(path: Path) -> torch.Tensor:
    """Read back a PNG this project wrote, as ``(3, H, W)`` float in [0, 1]."""
    with Image.open(path) as opened:
        return from_uint8_array(np.asarray(opened.convert("RGB")))


# -- decoding -----------------------------------------------------------------------
def _open_lazily(path: Path) -> Image.Image:
    """``Image.open`` reads the header only. Pillow's own bomb check fires there with a
    vaguer message; it is lifted for the header read alone so that our check below
    refuses with the width and height, still before any pixel is decoded."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _open_checked(path: Path) -> Image.Image:
    try:
        image = _open_lazily(path)
    except UnidentifiedImageError:
        size = path.stat().st_size
        what = "an empty file (0 bytes)" if size == 0 else "not a PNG, JPEG or WebP image"
        raise ImageError(f"{path}: {what}") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot be opened ({error})") from None
    if image.format not in ACCEPTED_FORMATS:
        fmt = image.format
        image.close()
        raise ImageError(f"{path}: format {fmt} is not accepted (PNG, JPEG or WebP only)")
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageError(
            f"{path}: {width}x{height} = {width * height:,} pixels exceeds the limit of {MAX_PIXELS:,} "
            "(refused before decoding: possible decompression bomb)"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        image.close()
        raise ImageError(f"{path}: the file is truncated or corrupt ({error})") from None
    return image


def png_bit_depth(path: Path) -> int | None:
    """The bit depth per sample of a PNG's IHDR chunk (bytes 24 of the file), or ``None`` if not a PNG.

    Pillow decodes a 16-bit-per-channel RGB(A) PNG straight to 8-bit ``RGB``/``RGBA`` (keeping the
    high byte of each sample), so its mode alone does not say that a reduction happened."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def note_not_plain(opened: Image.Image, path: Path, notes: list[str]) -> str:
    """Note what a still 8-bit picture loses from this file (animation, 16-bit samples); the mode to record.

    An animated WebP/APNG is used by its first frame (a protection of a still; the published file is a
    still), said here so the sidecar and the run's notes carry it. A 16-bit RGB PNG, which Pillow decodes
    at 8 bits, is recorded as ``RGB;16`` with the reduction noted (16-bit grey is scaled in :func:`to_rgb`).
    """
    mode = str(opened.mode)
    frames = int(getattr(opened, "n_frames", 1) or 1)
    if getattr(opened, "is_animated", False) and frames > 1:
        notes.append(f"animated {opened.format} ({frames} frames): the first frame is used, the output is a still")
    if opened.format == "PNG" and png_bit_depth(path) == 16 and mode in ("RGB", "RGBA"):
        notes.append(
            f"16 bits per channel ({mode}, {16 * len(mode)}-bit) reduced to 8 bits per channel "
            "(the high byte of each sample kept)"
        )
        mode = f"{mode};16"
    return mode


def orient(image: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation (the pixels come out upright), noting it."""
    transposed = ImageOps.exif_transpose(image)
    if transposed is not None and transposed is not image:
        orientation = image.getexif().get(0x0112)
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {orientation} applied")
        return transposed
    return image


#: ``colour=`` of :func:`load_images`: what to do with an embedded ICC profile.
COLOUR_MODES = ("ignore", "keep", "srgb")


def manage_colour(image: Image.Image, metadata: SourceMetadata, colour: str, notes: list[str]) -> Image.Image:
    """Keep the pixels in the embedded profile's space, or convert them to sRGB (LittleCMS, perceptual).

    ``keep``: an RGB profile's numbers are protected as they are and the profile travels
    with them; a CMYK or grey profile cannot describe the RGB output, so that picture is
    converted (and its profile dropped). ``srgb``: every profile is converted (nothing travels).
    """
    if colour == "ignore" or not metadata.icc_profile:
        return image
    name = metadata.icc_description
    if colour == "keep" and metadata.icc_space == "RGB":
        notes.append(f"colours kept in the embedded ICC profile's space ('{name}'); the profile travels with them")
        return image
    from PIL import ImageCms

    modes = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB", "LA": "RGBA"}
    if image.mode not in modes:
        notes.append(f"ICC profile '{name}' not applied: Pillow cannot colour-manage mode {image.mode}")
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(metadata.icc_profile))
        target = ImageCms.createProfile("sRGB")
        if image.mode == "LA":
            image = image.convert("RGBA")  # LittleCMS has no grey-with-alpha transform here
        converted = ImageCms.profileToProfile(
            image, source, target, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode=modes[image.mode]
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        notes.append(f"ICC profile '{name}' could not be applied ({error}); pixels taken as encoded")
        return image
    why = "its space is not RGB" if colour == "keep" else "--strip-metadata drops the profile"
    notes.append(f"converted from ICC profile '{name}' to sRGB ({why})")
    metadata.icc_profile, metadata.icc_description, metadata.icc_space = None, "", ""
    metadata.notes.append(f"ICC profile '{name}' not carried: the pixels were converted to sRGB")
    return converted if converted is not None else image


def to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Normalise any decoded mode to 8-bit RGB, recording what was done."""
    image = orient(image, notes)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 or image.mode.startswith("I;16") else 255.0
        array = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"16-bit ({image.mode}) scaled to 8-bit")
        image = Image.fromarray(array, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        notes.append("palette converted to RGB")
    if image.mode in ("LA", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        notes.append("alpha composited on white")
        image = background
    elif image.mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK converted to RGB")
    elif image.mode in ("L", "1"):
        image = image.convert("RGB")
        notes.append("grayscale converted to RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"{image.mode} converted to RGB")
    return image


def to_working_size(image: Image.Image, size: int, notes: list[str], where: str) -> Image.Image:
    """Resize the short side to ``size`` (bicubic) and centre-crop a ``size x size`` square."""
    if size % 8:
        raise ValueError(f"working size must be a multiple of 8 (the VAE downsamples by 8), got {size}")
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{where}: {width}x{height} is too small (the short side must be at least {MIN_SIDE} px)")
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    notes.append(f"resized {width}x{height} -> {resized.width}x{resized.height}, centre-cropped to {size}x{size}")
    return resized.crop((left, top, left + size, top + size))


def _finish(
    name: str,
    source: str,
    rgb: Image.Image,
    original: tuple[int, int],
    size: int,
    notes: list[str],
    *,
    keep_size: bool = False,
    source_format: str = "",
    source_mode: str = "",
) -> LoadedImage:
    if keep_size:
        width, height = rgb.size
        if min(width, height) < MIN_SIDE:
            raise ImageError(f"{source}: {width}x{height} is too small (the short side must be at least {MIN_SIDE} px)")
        working, resized = rgb, None
    else:
        before = len(notes)
        working = to_working_size(rgb, size, notes, source)
        resized = notes[before] if len(notes) > before else None
    pixels = from_uint8_array(np.asarray(working, dtype=np.uint8))
    return LoadedImage(
        name=name,
        source=source,
        pixels=pixels,
        pixel_hash=pixel_hash(pixels),
        original_size=original,
        notes=notes,
        source_format=source_format,
        source_mode=source_mode,
        resized=resized,
        upright_size=(int(rgb.size[0]), int(rgb.size[1])),
    )


def load_image_file(
    path: Path,
    size: int,
    name: str | None = None,
    *,
    keep_size: bool = False,
    metadata: bool = False,
    colour: str = "ignore",
) -> LoadedImage:
    """Decode, normalise and size one file; raises :class:`ImageError` naming the file.

    ``keep_size=True`` keeps the picture at its own size (after EXIF rotation) instead of
    bringing it to the ``size x size`` working square. ``metadata=True`` keeps the file's
    EXIF/ICC/XMP/IPTC on the result; ``colour`` is :func:`manage_colour`'s mode.
    """
    if colour not in COLOUR_MODES:
        raise ValueError(f"colour must be one of {COLOUR_MODES}, got {colour!r}")
    path = Path(path)
    notes: list[str] = []
    try:
        with _open_checked(path) as opened:
            original = opened.size
            source_format = str(opened.format or "")
            source_mode = note_not_plain(opened, path, notes)
            found = read_metadata(opened) if (metadata or colour != "ignore") else None
            upright = orient(opened, notes)
            if found is not None:
                upright = manage_colour(upright, found, colour, notes)
            rgb = to_rgb(upright, notes)
            loaded = _finish(
                name or path.stem,
                str(path),
                rgb,
                original,
                size,
                notes,
                keep_size=keep_size,
                source_format=source_format,
                source_mode=source_mode,
            )
            loaded.metadata = found if metadata else None
            return loaded
    except ImageError:
        raise
    # A damaged file can fail inside Pillow's parsers (a bad EXIF block, a broken chunk) with
    # errors other than OSError; each is this one file's problem, never a traceback.
    except (
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        EOFError,
        ZeroDivisionError,
        struct.error,
        Image.DecompressionBombError,
    ) as error:
        raise ImageError(f"{path}: cannot be decoded ({error.__class__.__name__}: {error})") from None


def load_sample(name: str, size: int, *, keep_size: bool = False) -> LoadedImage:
    from skimage import data

    array = getattr(data, name)()
    notes = [f"scikit-image sample '{name}'"]
    opened = Image.fromarray(array)
    rgb = to_rgb(opened, notes)
    return _finish(
        name,
        f"skimage.data.{name}",
        rgb,
        (array.shape[1], array.shape[0]),
        size,
        notes,
        keep_size=keep_size,
        source_format="scikit-image",
        source_mode=opened.mode,
    )


#: A folder holding this file is a ``bench compare`` run folder (bench/store.py's journal): its
#: artifacts are outputs, never inputs, even when ``--out`` lies inside ``--images``.
RUN_FOLDER_MARKER = "journal.sqlite"


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for the reason it is skipped)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def regular_file_error(path: Path) -> str | None:
    """Why ``path`` cannot be opened as an image file, or ``None`` for a regular file.

    Only regular files are opened: opening a FIFO named like an image blocks forever, and a
    folder is not "missing", it is a folder."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path}: no such file or folder"
    except OSError as error:
        return f"{path}: cannot be read ({error.strerror or error})"
    if stat.S_ISDIR(mode):
        return f"{path}: is a folder, not an image file"
    if not stat.S_ISREG(mode):
        return f"{path}: {_file_kind(mode)}, not a regular file; only regular files are read as images"
    return None


def _inside(path: Path, folders: list[Path]) -> Path | None:
    resolved = path.resolve()
    for folder in folders:
        if resolved == folder or folder in resolved.parents:
            return folder
    return None


def _walk_folder(root: Path, exclude: list[Path], skipped: list[Skipped]) -> list[tuple[str, Path | None, str]]:
    """Every regular, visible file under ``root``, sorted; what is left out goes to ``skipped``.

    Left out: hidden files and folders (a dot name: ``.ipynb_checkpoints/``, ``.DS_Store``, our own
    temp files; hidden files are dropped quietly, hidden folders named once), run folders of
    ``bench compare`` (:data:`RUN_FOLDER_MARKER`), the ``exclude`` folders (an ``--out`` inside
    the inputs) and anything that is not a regular file (a FIFO would block the intake)."""
    entries: list[tuple[str, Path | None, str]] = []
    # Symlinked folders are not descended (as rglob did before): no loops.
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        kept = []
        for sub in sorted(subfolders):
            path = here / sub
            if sub.startswith("."):
                skipped.append(Skipped(str(path), f"{path}: a hidden folder, not read as images"))
            elif (path / RUN_FOLDER_MARKER).is_file():
                skipped.append(Skipped(str(path), f"{path}: a bench compare run folder (its outputs are not inputs)"))
            elif (outside := _inside(path, exclude)) is not None:
                skipped.append(
                    Skipped(str(path), f"{path}: inside the --out folder {outside} (outputs are not inputs)")
                )
            else:
                kept.append(sub)
        subfolders[:] = kept
        for name in sorted(files):
            path = here / name
            if name.startswith("."):
                continue
            reason = regular_file_error(path)
            if reason is not None:
                if path.is_symlink() and not path.exists():
                    reason = f"{path}: a broken symbolic link"
                skipped.append(Skipped(str(path), reason))
                continue
            entries.append((str(path.relative_to(root).with_suffix("")), path, ""))
    return sorted(entries, key=lambda entry: str(entry[1]))


def _expand_sources(
    sources: list[str], exclude: list[Path] | None = None, skipped: list[Skipped] | None = None
) -> list[tuple[str, Path | None, str]]:
    """``(name, path or None for a sample, sample name)`` in a sorted, deterministic order."""
    outs = [Path(folder).expanduser().resolve() for folder in exclude or []]
    left_out = skipped if skipped is not None else []
    entries: list[tuple[str, Path | None, str]] = []
    for source in sources:
        if source == "samples":
            entries += [(name, None, name) for name in SAMPLE_NAMES]
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            entries += _walk_folder(path, outs, left_out)
        else:
            entries.append((path.stem, path, ""))
    return entries


def load_images(
    sources: list[str] | str,
    size: int,
    *,
    keep_size: bool = False,
    metadata: bool = False,
    colour: str = "ignore",
    exclude: list[Path] | None = None,
) -> IntakeResult:
    """Load every image named by ``sources`` (folders, files, or ``samples``) at ``size``.

    ``keep_size=True`` keeps each picture at its own size and aspect ratio (``bench
    protect``); the default brings it to the model's ``size x size`` working square
    (``bench compare``, which evaluates at the model's size).

    ``metadata`` and ``colour``: see :func:`load_image_file` (``bench protect`` asks for both).

    Bad files and duplicates (same pixels) are skipped with a reason; order is sorted
    by name within each source so runs are reproducible on any file system. ``exclude``: folders
    whose files are never inputs (``bench protect --out`` inside ``--images``), skipped with the reason.
    """
    if isinstance(sources, str):
        sources = [sources]
    loaded: list[LoadedImage] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    for name, path, sample in _expand_sources(sources, exclude, skipped):
        where = str(path) if path is not None else f"skimage.data.{sample}"
        try:
            if path is None:
                image = load_sample(sample, size, keep_size=keep_size)
            elif (reason := regular_file_error(path)) is not None:
                raise ImageError(reason)
            else:
                image = load_image_file(path, size, name=name, keep_size=keep_size, metadata=metadata, colour=colour)
        except ImageError as error:
            log.info("skipping %s", error)
            skipped.append(Skipped(where, str(error)))
            continue
        if image.pixel_hash in seen:
            skipped.append(Skipped(where, f"{where}: same pixels as {seen[image.pixel_hash]} (duplicate)"))
            continue
        seen[image.pixel_hash] = where
        loaded.append(image)
    return IntakeResult(loaded, skipped)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 3, S, S)`` images in [0, 1] -> ``(N, 3, size, size)``, bicubic on the 8-bit pixels.

    Used when an attack model works at another resolution than the protection model
    (transfer): the published PNG, and the clean image it is compared with, go through
    this same resize, as a copier would resize a downloaded picture. Identity when the
    size already matches.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = [
        from_uint8_array(
            np.asarray(
                Image.fromarray(to_uint8_array(image), mode="RGB").resize((size, size), Image.Resampling.BICUBIC)
            )
        )
        for image in images
    ]
    return torch.stack(resized)
