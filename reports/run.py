"""Reading a run folder for the report: ``manifest.json``, ``rows.csv`` and artifacts inside the folder.

Nothing here trusts the folder: artifact paths from ``rows.csv`` are resolved and refused if
they leave the run folder, text values stay text (an image named ``NA`` is not a missing
value), and numbers are parsed from the ``value`` column only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cloakbench.core import schema
from cloakbench.core.schema import COLUMNS

logger = logging.getLogger(__name__)

NO_PROTECTION = "none"
ATTACK_PAIRS = tuple(pair.value for pair in schema.ATTACK_PAIRS)


class RunFolderError(RuntimeError):
    """The folder is not a readable run (no rows.csv, unreadable manifest)."""


def attack_label(purification: str, mimicry: str) -> str:
    """``jpeg+sdedit``, ``sdedit`` or ``jpeg``; empty when the row is about no attack."""
    return "+".join(part for part in (purification, mimicry) if part)


_GENERATION = re.compile(r"generation \d+")
GENERATIONS = "all generations"


def setting_group(setting: str) -> str:
    """Set attacks (textual inversion) write one setting per generated image; the report pools them."""
    return GENERATIONS if _GENERATION.fullmatch(setting) else setting


def setting_sort_key(setting: str) -> tuple:
    try:
        return (0, float(setting), setting)
    except ValueError:
        return (1, 0.0, setting)


def plan_names(entries: Any) -> list[str]:
    """Plan entries may be names or ``{name: ...}`` dicts; keep the names, in order."""
    names = []
    for entry in entries or []:
        if isinstance(entry, dict):
            entry = entry.get("name") or entry.get("spec") or ""
        if entry and str(entry) not in names:
            names.append(str(entry))
    return names


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:|~)?[/\\](?:[^\s/\\'\"]+[/\\])+([^\s/\\'\"]*)")


def shorten_paths(text: str) -> str:
    """Replace absolute paths in free text with ``…/<last folder>/<name>``.

    The report must not carry absolute paths (it is shared, and must work from a copied
    folder); ``manifest.json`` keeps the full text for whoever needs it.
    """

    def replace(match: re.Match) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group(0)) if p]
        return "…/" + "/".join(parts[-2:]) if parts else match.group(0)

    return _ABSOLUTE_PATH.sub(replace, text)


@dataclasses.dataclass
class Run:
    run_dir: Path
    manifest: dict[str, Any]
    rows: pd.DataFrame
    #: The run folders the rows' artifacts are resolved in: a row's ``source`` column indexes this
    #: list (a merged folder is one run folder with its own artifacts, reports.merge).
    run_dirs: list[Path] = dataclasses.field(default_factory=list)

    @property
    def quick(self) -> bool:
        """A ``--quick`` run (every step count shrunk): a smoke test, whose numbers measure nothing."""
        settings = self.manifest.get("settings")
        return bool(isinstance(settings, dict) and settings.get("quick"))

    # -- plan order -------------------------------------------------------------------
    def protections(self) -> list[str]:
        """Protections in plan order, ``none`` first (it is the reference), then any extra seen in rows."""
        names = plan_names(self.manifest.get("plan", {}).get("protections"))
        for name in self.rows["protection"]:
            if name and name not in names:
                names.append(name)
        if NO_PROTECTION in names:
            names.remove(NO_PROTECTION)
            names.insert(0, NO_PROTECTION)
        return names

    def attacks(self) -> list[tuple[str, str, str]]:
        """``(purification, mimicry, setting group)`` keys of attack rows, in plan order then setting order."""
        plan = plan_names(self.manifest.get("plan", {}).get("attacks"))
        columns = ["purification", "mimicry", "setting_group"]
        keys = set(map(tuple, self.attack_rows()[columns].drop_duplicates().itertuples(index=False)))

        def order(key):
            label = attack_label(key[0], key[1])
            position = plan.index(label) if label in plan else len(plan)
            return (position, label, setting_sort_key(key[2]))

        return sorted(keys, key=order)

    def attack_rows(self) -> pd.DataFrame:
        return self.rows[self.rows["pair"].isin(ATTACK_PAIRS)]

    def image_names(self) -> dict[str, str]:
        """image id (pixel hash) -> display name, first name seen wins."""
        names: dict[str, str] = {}
        for image, name in zip(self.rows["image"], self.rows["image_name"]):
            if image and image not in names:
                names[image] = name or image[:12]
        return names

    # -- artifacts ----------------------------------------------------------------------
    def artifact_path(self, relative: str, source: int = 0) -> Path | None:
        """The artifact file inside its run folder, or ``None`` if absent or outside the folder."""
        if not relative:
            return None
        candidate = Path(relative)
        if candidate.is_absolute():
            logger.warning("ignoring absolute artifact path in rows.csv: %s", relative)
            return None
        folders = self.run_dirs or [self.run_dir]
        root = folders[int(source)].resolve()
        resolved = (root / candidate).resolve()
        if root not in resolved.parents:
            logger.warning("ignoring artifact path that leaves the run folder: %s", relative)
            return None
        return resolved if resolved.is_file() else None


#: Columns a rows.csv must have to be read as a cloakbench run (the rest are filled with "").
REQUIRED_COLUMNS = ("protection", "pair", "metric", "value", "status")
_SNIFF_BYTES = 8192


def _refuse_rows(path: Path, why: str) -> RunFolderError:
    return RunFolderError(
        f"{path} {why}; point `bench report` at a run folder written by `bench compare`, or rerun the run to rewrite it"
    )


def read_rows(path: Path) -> pd.DataFrame:
    """The rows of ``path``; an empty, binary or foreign file is refused with one sentence (RunFolderError)."""
    with open(path, "rb") as stream:
        head = stream.read(_SNIFF_BYTES)
    if not head.strip():
        raise _refuse_rows(path, "is empty (not even a header)")
    if b"\x00" in head:
        raise _refuse_rows(path, "is a binary file, not a CSV")
    # Every column is text (keep_default_na=False: an image called "NA" stays "NA"); only
    # `value` becomes a number, with "" -> NaN and "inf" -> inf (PSNR of identical images).
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8")
    except UnicodeDecodeError:
        raise _refuse_rows(path, "is not UTF-8 text") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise _refuse_rows(path, f"is not a readable CSV ({str(error).splitlines()[0]})") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in rows.columns]
    if missing:
        raise _refuse_rows(path, f"is not a cloakbench rows.csv: it lacks the column(s) {', '.join(missing)}")
    for column in COLUMNS:
        if column not in rows.columns:
            rows[column] = ""
    values = pd.to_numeric(rows["value"].replace("", math.nan), errors="coerce")
    # A hand-edited value that is not a number ("12,5 dB") would drop out of every mean silently.
    bad = values.isna() & (rows["value"].str.strip() != "") & (rows["value"].str.lower() != "nan")
    if bad.any():
        first = int(bad.idxmax())
        raise RunFolderError(
            f"{path}, line {first + 2}: value {rows['value'].iloc[first]!r} is not a number "
            f"({int(bad.sum())} such value(s) in all); write it with a decimal point and no unit "
            "(e.g. 12.5), or leave it empty, then rerun `bench report`"
        )
    rows["value"] = values
    rows["attack"] = [attack_label(p, m) for p, m in zip(rows["purification"], rows["mimicry"])]
    rows["setting_group"] = [setting_group(setting) for setting in rows["setting"]]
    # A set attack's set-level rows (FID over all generations) carry no setting: same group.
    set_attacks = set(rows[rows["setting_group"] == GENERATIONS]["attack"])
    pooled = rows["attack"].isin(set_attacks) & (rows["setting"] == "") & (rows["attack"] != "")
    rows.loc[pooled, "setting_group"] = GENERATIONS
    # A swept attack chain (``attack_setting``, e.g. jpeg.quality=75) is another attacker: its
    # configuration joins the setting group, so each configuration has its own line and worst case.
    rows["setting_group"] = [
        f"{chain} {group}".strip() if chain else group
        for chain, group in zip(rows["attack_setting"], rows["setting_group"])
    ]
    rows["source"] = 0  # which of ``Run.run_dirs`` the row (and its artifact) comes from
    return rows


#: Manifest fields the report reads, and the JSON type each must have when present.
_MANIFEST_TYPES = {"plan": dict, "model": dict, "versions": dict, "skipped": list}


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` as a dict; damaged (not JSON, not an object, wrong field types) is refused."""
    what_to_do = "restore it from the run's copy or delete it to render the report without run details"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunFolderError(f"{path} is damaged (not UTF-8 text): {what_to_do}") from None
    except json.JSONDecodeError as error:
        raise RunFolderError(
            f"{path} is damaged (not valid JSON: {error.msg} at line {error.lineno}): {what_to_do}"
        ) from None
    if not isinstance(manifest, dict):
        raise RunFolderError(f"{path} is damaged (it must hold a JSON object): {what_to_do}")
    for key, kind in _MANIFEST_TYPES.items():
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], kind):
            raise RunFolderError(
                f'{path} is damaged (its "{key}" field is not a JSON '
                f"{'object' if kind is dict else 'list'}): {what_to_do}"
            )
    return manifest


def _fill_models(rows: pd.DataFrame, manifest: dict[str, Any]) -> None:
    """Rows written before the model columns existed ran protection and attack on the manifest's model."""
    model = manifest.get("model") or {}
    name = str(model.get("name") or "") if isinstance(model, dict) else ""
    if not name:
        return
    rows.loc[rows["protect_model"] == "", "protect_model"] = name
    # Only rows about an attack ran on an attack model; a protect row has none.
    rows.loc[(rows["attack_model"] == "") & (rows["attack"] != ""), "attack_model"] = name


#: The run journal of a run folder (bench/store.py): cells and their rows, before rows.csv is written.
JOURNAL_FILE = "journal.sqlite"


def _missing_rows_sentence(run_dir: Path) -> str:
    """Why a folder without rows.csv cannot be reported: not a run, or a run interrupted before its
    rows.csv was written (its journal holds the finished cells; rerunning the command resumes it)."""
    journal = run_dir / JOURNAL_FILE
    if not journal.is_file():
        return f"{run_dir} is not a run folder: rows.csv is missing"
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=2)
        try:
            done = db.execute("SELECT COUNT(*) FROM cells WHERE state = 'done'").fetchone()[0]
        finally:
            db.close()
        finished = f"its journal holds {done} finished cell(s)"
    except sqlite3.Error:
        finished = "it holds a journal"
    command = ""
    manifest_path = run_dir / "manifest.json"
    if manifest_path.is_file():
        try:
            command = str(read_manifest(manifest_path).get("command") or "")
        except RunFolderError:
            command = ""
    how = f"rerun `{command}`" if command else "rerun the bench compare command that made it"
    return (
        f"{run_dir} holds an interrupted run: rows.csv is not written yet ({finished}); {how} to resume it "
        "(finished cells are reused), then `bench report`"
    )


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    rows_path = run_dir / "rows.csv"
    if not rows_path.is_file():
        raise RunFolderError(_missing_rows_sentence(run_dir))
    manifest_path = run_dir / "manifest.json"
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = read_manifest(manifest_path)
    else:
        logger.warning("%s has no manifest.json; the report will say so", run_dir)
    rows = read_rows(rows_path)
    _fill_models(rows, manifest)
    return Run(run_dir=run_dir, manifest=manifest, rows=rows, run_dirs=[run_dir])
