"""Datasets: images with a category, a prompt and an inpainting mask each.

``--images`` takes, in any mix (README, "Datasets, sweeps, seeds and transfer"):

- a folder of images (as before; category "" for files at its top level);
- a folder of category subfolders, ``DIR/<category>/*.png``: an image's category is the
  name of the first folder under ``DIR`` that holds it;
- a manifest CSV with the columns ``path`` (required), ``prompt``, ``category`` and
  ``mask`` (optional); relative paths are relative to the CSV's folder;
- ``samples`` (the photos shipped with scikit-image).

An optional ``prompts.toml`` beside the folder's images (``DIR/prompts.toml``) or beside
the manifest maps categories to prompts, the way the reference code of Xue et al.
("Toward effective protection against diffusion-based mimicry through score
distillation", arXiv:2311.12832) picks one prompt per category (anime, artwork,
landscape, portrait)::

    [prompts]
    portrait = "a photo of a person"
    landscape = "a photo of a landscape"

An image's prompt is its manifest ``prompt``, else its category's prompt, else ``""``
(none: attacks then use the run's ``--prompt`` and protections their configured prompt).

A manifest is an explicit list, so every problem in it is an error naming the row
(missing file, unknown column, duplicate path, unreadable image, mask of another size);
a folder keeps the intake's rule of skipping a bad file with its reason.

Masks (1 = repaint, as the inpainting attack takes them) are brought to the working
size by the same resize-and-centre-crop as their image, then binarised at 0.5.
A mask is drawn on the picture as a viewer shows it: an image with an EXIF orientation is
used upright, and its mask must have the upright picture's size (the mask file's own EXIF
orientation is applied too). A mask of the *stored* orientation of a quarter-turned image is
refused with the reason rather than turned: for the mirrored and half-turned orientations the
two sizes are equal, so a turn guessed from the size could not be applied consistently.
A mask that selects no pixel at the working size is refused (inpainting it would return its
input and measure nothing).

Paths in what a run records (manifest.json, rows, the report) are relative to the manifest's
folder; an image outside it (an absolute path, ``../``) is recorded by its file name alone, so a
shared report does not hold the author's file system.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cloakbench.core.config import read_toml_text
from cloakbench.core.images import (
    ImageError,
    IntakeResult,
    LoadedImage,
    Skipped,
    load_image_file,
    load_images,
    regular_file_error,
    to_working_size,
)

#: The columns a manifest CSV may have; ``path`` is required.
MANIFEST_COLUMNS = ("path", "prompt", "category", "mask")
#: The optional category -> prompt file, looked for beside a folder's images or a manifest.
PROMPTS_FILE = "prompts.toml"


class DatasetError(ImageError):
    """A bad manifest or prompts file; the message names the file, the row and what to do."""


@dataclass(frozen=True)
class ImageInfo:
    """What a dataset says about one image beyond its pixels."""

    category: str = ""
    prompt: str = ""
    mask: torch.Tensor | None = field(default=None, compare=False)  # (1, S, S) float, 1 = repaint
    mask_hash: str = ""  # SHA-256 of the working-size mask's bytes; "" without a mask


@dataclass
class Dataset(IntakeResult):
    """An intake (images, skipped files) plus each image's category, prompt and mask, by pixel hash."""

    info: dict[str, ImageInfo] = field(default_factory=dict)

    def of(self, image: LoadedImage) -> ImageInfo:
        return self.info.get(image.pixel_hash, ImageInfo())

    def describe(self) -> list[dict]:
        """One JSON-ready entry per image: what the run folder's manifest records."""
        return [
            {
                "name": im.name,
                "source": im.source,
                "hash": im.pixel_hash,
                "category": self.of(im).category,
                "prompt": self.of(im).prompt,
                "mask": self.of(im).mask_hash,
            }
            for im in self.images
        ]


def read_category_prompts(path: Path) -> dict[str, str]:
    """``prompts.toml`` -> ``{category: prompt}`` (a ``[prompts]`` table, or top-level keys).

    The file must be UTF-8 TOML whose table maps each category to a string; anything else is one
    :class:`DatasetError` naming the file (core/config.py, :func:`read_toml_text`).
    """
    data = read_toml_text(path, "prompts file", DatasetError)
    table = data.get("prompts", data)
    if not isinstance(table, dict):
        raise DatasetError(
            f'{path}: "prompts" must be a table of CATEGORY = "prompt", e.g. [prompts] then portrait = "a photo of ..."'
        )
    bad = [key for key, value in table.items() if not isinstance(value, str)]
    if bad:
        raise DatasetError(
            f'{path}: the prompt of category {bad[0]!r} must be a string, e.g. {bad[0]} = "a photo of ..."'
        )
    return dict(table)


def check_prompt_categories(path: Path, category_prompts: dict[str, str], categories: set[str]) -> None:
    """Refuse a ``prompts.toml`` category that no image has: a typo (``landscpe``) would otherwise run
    the ``landscape`` images without their prompt, without a word. Refused rather than warned,
    because the file is an explicit list, as a manifest is (every problem in it is an error)."""
    from cloakbench.core.registry import suggest

    known = sorted(c for c in categories if c)
    for category in category_prompts:
        if category not in categories:
            have = (
                f"the categories here are: {', '.join(known)}"
                if known
                else "no image here has a category (categories are subfolders, DIR/<category>/*.png, "
                "or a manifest's category column)"
            )
            raise DatasetError(
                f"{path}: category {category!r} matches no image{suggest(category, known)}; {have}. "
                "Fix the name or remove the line"
            )


def working_mask(
    path: Path,
    image_size: tuple[int, int],
    size: int,
    where: str,
    shown: str | None = None,
    stored_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, str]:
    """A mask file as a ``(1, size, size)`` binary tensor, transformed like its image; and its hash.

    ``shown``: how the error names the mask (the manifest's own text); the path by default.
    ``image_size`` is the upright picture's size; ``stored_size`` (when the image carries an EXIF
    orientation) the size as stored, named in the refusal of a mask drawn on the stored pixels.
    """
    shown = shown or str(path)
    try:
        with Image.open(path) as opened:
            picture = (ImageOps.exif_transpose(opened) or opened).convert("L")
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"{where}: mask {shown} cannot be read ({error})") from None
    if picture.size != image_size:
        width, height = picture.size
        if stored_size is not None and picture.size == stored_size and stored_size != image_size:
            raise DatasetError(
                f"{where}: mask {shown} is {width}x{height}, the image file's stored orientation, but the image "
                f"carries an EXIF orientation and is used upright ({image_size[0]}x{image_size[1]}); draw the mask "
                "on the upright picture (as a viewer shows it)"
            )
        raise DatasetError(
            f"{where}: mask {shown} is {width}x{height} but the image is "
            f"{image_size[0]}x{image_size[1]}; give a mask of the image's size"
        )
    working = to_working_size(picture, size, [], str(path))
    binary = (np.asarray(working, dtype=np.float32) / 255.0 >= 0.5).astype(np.float32)
    if not binary.any():
        raise DatasetError(
            f"{where}: mask {shown} selects no pixel (none is 128 or brighter at the {size}x{size} working size), "
            "so inpainting would return its input; paint the region to repaint white, or drop the mask"
        )
    return torch.from_numpy(binary)[None], hashlib.sha256(binary.tobytes()).hexdigest()


def _not_a_file(path: Path) -> str | None:
    """Why a manifest's path cannot be read as a file (missing, a folder, a FIFO ...), or ``None``."""
    if not path.exists() and not path.is_symlink():
        return f"does not exist (looked for {path})"
    if path.is_dir():
        return f"is a folder ({path}), not an image file; list the files inside it, one per row"
    reason = regular_file_error(path)
    if reason is not None:
        return reason.removeprefix(f"{path}: ") + f" ({path})"
    return None


def recorded_path(image_path: Path, base: Path) -> str:
    """How a run records a manifest's image: relative to the manifest's folder, or by file name
    when the image lies outside it, never an absolute path (a shared report would leak it)."""
    try:
        return image_path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return image_path.name


def load_manifest(path: Path, size: int) -> Dataset:
    """Every row of a manifest CSV, loaded at ``size``; any bad row is a :class:`DatasetError` naming it."""
    base = path.parent
    prompts_file = base / PROMPTS_FILE
    category_prompts = read_category_prompts(prompts_file) if prompts_file.is_file() else {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"manifest {path} cannot be read ({error})") from None
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise DatasetError(
            f"manifest {path}: unknown column {unknown[0]!r}; the columns are "
            f"{', '.join(MANIFEST_COLUMNS)} (path required)"
        )
    if "path" not in columns:
        raise DatasetError(
            f"manifest {path}: no 'path' column; the first line must name the columns, e.g. path,prompt,category,mask"
        )
    dataset = Dataset([], [])
    seen_paths: dict[Path, int] = {}
    seen_pixels: dict[str, int] = {}
    for line, raw in enumerate(rows, start=2):  # line 1 is the header
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"manifest {path}, row {line}"
        if not row.get("path"):
            raise DatasetError(f"{where}: empty path; every row names an image file")
        image_path = (base / row["path"]).resolve()
        if image_path in seen_paths:
            raise DatasetError(
                f"{where}: path {row['path']} is listed again (first on row "
                f"{seen_paths[image_path]}); list each image once"
            )
        seen_paths[image_path] = line
        if (reason := _not_a_file(image_path)) is not None:
            raise DatasetError(f"{where}: image {row['path']} {reason}")
        recorded = recorded_path(image_path, base)
        try:
            image = load_image_file(image_path, size, name=Path(recorded).with_suffix("").as_posix())
        except ImageError as error:
            raise DatasetError(f"{where}: {error}") from None
        image.source = recorded
        if image.pixel_hash in seen_pixels:
            raise DatasetError(
                f"{where}: {row['path']} has the same pixels as row {seen_pixels[image.pixel_hash]}; "
                "list each image once"
            )
        seen_pixels[image.pixel_hash] = line
        category = row.get("category", "")
        prompt = row.get("prompt", "") or category_prompts.get(category, "")
        mask, mask_hash = None, ""
        if row.get("mask"):
            mask_path = base / row["mask"]
            if (reason := _not_a_file(mask_path.resolve())) is not None:
                raise DatasetError(f"{where}: mask {row['mask']} {reason}")
            upright = image.upright_size or image.original_size
            mask, mask_hash = working_mask(
                mask_path,
                upright,
                size,
                where,
                row["mask"],
                stored_size=(int(image.original_size[0]), int(image.original_size[1])),
            )
        dataset.images.append(image)
        dataset.info[image.pixel_hash] = ImageInfo(category, prompt, mask, mask_hash)
    if not dataset.images:
        raise DatasetError(f"manifest {path} lists no images; add rows under the header")
    check_prompt_categories(prompts_file, category_prompts, {i.category for i in dataset.info.values()})
    return dataset


def _category_of(name: str) -> str:
    """``portrait/alice`` -> ``portrait``; an image at the folder's top level has no category."""
    parts = Path(name).parts
    return parts[0] if len(parts) > 1 else ""


def load_dataset(sources: list[str] | str, size: int) -> Dataset:
    """Load ``sources`` (folders, category folders, manifest CSVs, files, ``samples``) at ``size``."""
    if isinstance(sources, str):
        sources = [sources]
    dataset = Dataset([], [])
    for source in sources:
        path = Path(source).expanduser()
        if path.is_file() and path.suffix.lower() == ".csv":
            part = load_manifest(path, size)
        else:
            intake = load_images([source], size)
            prompts_file = path / PROMPTS_FILE if path.is_dir() else None
            category_prompts = read_category_prompts(prompts_file) if prompts_file and prompts_file.is_file() else {}
            # prompts.toml is the dataset's own file, not an image the intake could not read.
            skipped = [s for s in intake.skipped if not (prompts_file and Path(s.path) == prompts_file)]
            part = Dataset(intake.images, skipped)
            for image in intake.images:
                category = _category_of(image.name) if path.is_dir() else ""
                part.info[image.pixel_hash] = ImageInfo(category, category_prompts.get(category, ""))
            if category_prompts and prompts_file is not None:
                check_prompt_categories(prompts_file, category_prompts, {i.category for i in part.info.values()})
        _merge(dataset, part)
    return dataset


def _merge(into: Dataset, part: Dataset) -> None:
    """Add ``part`` to ``into``; an image already there (same pixels) is skipped with the reason."""
    known = {im.pixel_hash: im.source for im in into.images}
    into.skipped += part.skipped
    for image in part.images:
        if image.pixel_hash in known:
            into.skipped.append(
                Skipped(image.source, f"{image.source}: same pixels as {known[image.pixel_hash]} (duplicate)")
            )
            continue
        known[image.pixel_hash] = image.source
        into.images.append(image)
        into.info[image.pixel_hash] = part.info.get(image.pixel_hash, ImageInfo())
