"""Image grids: clean | protected | perturbation ×10 | attack on clean | attack on protected.

Artifacts are found through ``rows.csv`` only (the ``artifact`` column, relative to the run
folder): the clean image is the artifact of a protection ``none`` row without an attack,
the protected image that of the ``protected_vs_clean`` row, each attack output that of its
attack row, and the attack on clean is the ``none`` row with the same image, purification,
mimicry and setting. Every image is decoded by Pillow and re-encoded as WebP (lossy,
:data:`WEBP_QUALITY`) before it is embedded, so no byte of an input file reaches the page and
the report stays small (README, "The report": ≤ 3 MB for ``make demo``). The grids sit in a
collapsed section below the leaderboard and the comparison figures.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from cloakbench.core.schema import PER_IMAGE_ATTACK_PAIRS, Pair
from cloakbench.reports.leaderboard import budgets
from cloakbench.reports.run import NO_PROTECTION, Run, attack_label

logger = logging.getLogger(__name__)

AMPLIFY = 10
THUMBNAIL = 120
WEBP_QUALITY = 72
MAX_IMAGES_PER_GRID = 2
MAX_GRIDS = 40
COLUMNS = ("clean", "protected", f"perturbation ×{AMPLIFY}", "attack on clean", "attack on protected")
ATTACK_PAIRS = tuple(pair.value for pair in PER_IMAGE_ATTACK_PAIRS)  # per-image attack outputs


@dataclasses.dataclass
class Tile:
    label: str
    data_uri: str | None
    note: str = ""


@dataclasses.dataclass
class GridRow:
    image_name: str
    tiles: list[Tile]


@dataclasses.dataclass
class Grid:
    protection: str
    attack: str
    setting: str
    rows: list[GridRow]
    images_total: int = 0  # images with a protected artifact; ``rows`` shows the first of them


def read_rgb(path: Path | None) -> tuple[np.ndarray | None, str]:
    """``(H, W, 3) uint8`` pixels, or ``None`` and why."""
    if path is None:
        return None, "no artifact"
    try:
        with Image.open(path) as image:
            image.load()  # decode fully now: a truncated file is an error, not a grey tile
            return np.asarray(image.convert("RGB")), ""
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        logger.warning("cannot read artifact %s: %s", path.name, error)
        return None, "unreadable artifact"


def to_data_uri(pixels: np.ndarray, size: int = THUMBNAIL) -> str:
    image = Image.fromarray(pixels, mode="RGB")
    longest = max(image.size)
    if longest > size:
        scale = size / longest
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
        )
    elif longest * 2 <= size:  # small test images: enlarge by whole pixels so they stay crisp
        factor = size // longest
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def perturbation(protected: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """``0.5 + AMPLIFY·(protected − clean)`` in 8-bit, so grey = unchanged."""
    difference = protected.astype(np.float64) - clean.astype(np.float64)
    return np.clip(np.round(127.5 + AMPLIFY * difference), 0, 255).astype(np.uint8)


class ImageLookup:
    """Artifact lookups and decoded-image cache for one run (or a merged run).

    A lookup returns a key ``"<source>:<relative path>"`` (the run folder's index in a merged
    report, then the path relative to it), or "" when no row names an artifact.
    """

    def __init__(self, run: Run):
        self.run = run
        rows = run.rows[run.rows["artifact"] != ""]
        # One attack model and one run seed, so every tile of a row comes from the same attack
        # run (the attack on clean beside the attack on protected): the protect model when the
        # attacks also ran on it (no transfer), else the first; the lowest run seed.
        attacked = rows[rows["attack"] != ""]
        models = sorted(set(attacked["attack_model"]))
        same = [m for m in models if m in set(rows["protect_model"])]
        self.attack_model = (same or models or [""])[0]
        seeds = sorted(set(rows["run_seed"]) - {""}, key=lambda s: (len(s), s))
        self.run_seed = seeds[0] if seeds else ""
        keep = (rows["attack"] == "") | (rows["attack_model"] == self.attack_model)
        if self.run_seed:
            keep &= rows["run_seed"].isin([self.run_seed, ""])
        self.rows = rows[keep]
        # Images that were protected one by one (not the "concept" pseudo-image of set attacks).
        self.images = set(run.rows[run.rows["pair"] == Pair.PROTECTED_VS_CLEAN.value]["image"])
        self._pixels: dict[str, tuple[np.ndarray | None, str]] = {}
        self._uris: dict[str, str] = {}

    def _first(self, selection) -> str:
        found = self.rows[selection]
        if found.empty:
            return ""
        return f"{int(found['source'].iloc[0])}:{found['artifact'].iloc[0]}"

    def clean(self, image: str) -> str:
        rows = self.rows
        base = (rows["image"] == image) & (rows["protection"] == NO_PROTECTION) & (rows["attack"] == "")
        return self._first(base & (rows["pair"] == Pair.PROTECTED_VS_CLEAN.value)) or self._first(base)

    def protected(self, image: str, protection: str, budget: str | None = None) -> str:
        rows = self.rows
        selection = (
            (rows["image"] == image)
            & (rows["protection"] == protection)
            & (rows["pair"] == Pair.PROTECTED_VS_CLEAN.value)
        )
        if budget is not None:
            selection &= rows["protection_setting"] == budget
        return self._first(selection)

    def attacked(
        self, image: str, protection: str, purification: str, mimicry: str, setting: str, budget: str | None = None
    ) -> str:
        """The attack's output; for ``none`` (the attack on clean) any budget, as it has none."""
        rows = self.rows
        selection = (
            (rows["image"] == image)
            & (rows["protection"] == protection)
            & (rows["purification"] == purification)
            & (rows["mimicry"] == mimicry)
            & (rows["setting_group"] == setting)
            & rows["pair"].isin(ATTACK_PAIRS)
        )
        if budget is not None and protection != NO_PROTECTION:
            selection &= rows["protection_setting"] == budget
        return self._first(selection)

    def has_attack_outputs(self, purification: str, mimicry: str, setting: str) -> bool:
        rows = self.rows
        return bool(
            (
                (rows["purification"] == purification)
                & (rows["mimicry"] == mimicry)
                & (rows["setting_group"] == setting)
                & rows["pair"].isin(ATTACK_PAIRS)
                & rows["image"].isin(self.images)
            ).any()
        )

    def pixels(self, key: str) -> tuple[np.ndarray | None, str]:
        if key not in self._pixels:
            source, _, relative = key.partition(":")
            path = self.run.artifact_path(relative, int(source)) if relative else None
            if relative and path is None:
                self._pixels[key] = (None, "artifact missing or outside the run folder")
            else:
                self._pixels[key] = read_rgb(path)
        return self._pixels[key]

    def tile(self, label: str, relative: str) -> Tile:
        pixels, why = self.pixels(relative)
        if pixels is None:
            return Tile(label, None, why)
        if relative not in self._uris:
            self._uris[relative] = to_data_uri(pixels)
        return Tile(label, self._uris[relative])


def build_grids(run: Run, max_images: int = MAX_IMAGES_PER_GRID, max_grids: int = MAX_GRIDS) -> tuple[list[Grid], int]:
    """Grids per protection (not ``none``) and attack setting, and how many were left out for size."""
    artifacts = ImageLookup(run)
    names = run.image_names()
    images = sorted(names, key=lambda image: (names[image], image))
    attacks = run.attacks() or [("", "", "")]
    grids: list[Grid] = []
    omitted = 0
    for budget in budgets(run):
        protection = budget.protection
        if protection == NO_PROTECTION:
            continue
        for purification, mimicry, setting in attacks:
            attack = attack_label(purification, mimicry)
            if attack and not artifacts.has_attack_outputs(purification, mimicry, setting):
                continue  # set attacks (textual inversion) have no per-image output to line up
            grid_rows = []
            available = [image for image in images if artifacts.protected(image, protection, budget.setting)]
            for image in available[:max_images]:
                protected_rel = artifacts.protected(image, protection, budget.setting)
                clean_rel = artifacts.clean(image)
                tiles = [artifacts.tile(COLUMNS[0], clean_rel), artifacts.tile(COLUMNS[1], protected_rel)]
                clean_pixels, _ = artifacts.pixels(clean_rel)
                protected_pixels, _ = artifacts.pixels(protected_rel)
                if clean_pixels is None or protected_pixels is None:
                    tiles.append(Tile(COLUMNS[2], None, "needs both clean and protected"))
                elif clean_pixels.shape != protected_pixels.shape:
                    tiles.append(Tile(COLUMNS[2], None, "clean and protected sizes differ"))
                else:
                    tiles.append(Tile(COLUMNS[2], to_data_uri(perturbation(protected_pixels, clean_pixels))))
                if attack:
                    tiles.append(
                        artifacts.tile(
                            COLUMNS[3], artifacts.attacked(image, NO_PROTECTION, purification, mimicry, setting)
                        )
                    )
                    tiles.append(
                        artifacts.tile(
                            COLUMNS[4],
                            artifacts.attacked(image, protection, purification, mimicry, setting, budget.setting),
                        )
                    )
                grid_rows.append(GridRow(names[image], tiles))
            if not grid_rows:
                continue
            if len(grids) >= max_grids:
                omitted += 1
                continue
            grids.append(Grid(budget.name, attack, setting, grid_rows, len(available)))
    return grids, omitted
