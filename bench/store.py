"""The results store of one run folder (docs/RELIABILITY.md, "Store").

Layout::

    RUN/manifest.json    versions, git commit + dirty flag, device, command line, UTC times, plan
    RUN/journal.sqlite   WAL journal: cells (pending -> running(pid) -> done | failed(reason)) and their rows
    RUN/artifacts/ab/<sha256>.png   content-addressed outputs, written atomically
    RUN/rows.csv         tidy long-format rows, rebuilt from the journal in plan order
    RUN/.lock            held (flock) by the one process working on the run

A cell counts as done only if its journal row says so *and* every artifact it lists
still hashes to the recorded SHA-256; rows and artifact hashes are committed in the
same transaction that marks the cell done.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloakbench.core.io import write_atomic
from cloakbench.core.provenance import sha256_bytes, sha256_file
from cloakbench.core.schema import COLUMNS, csv_value

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    reason TEXT,
    artifacts TEXT NOT NULL DEFAULT '[]',
    updated_utc REAL,
    consumed TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS rows (
    cell TEXT NOT NULL,
    position INTEGER NOT NULL,
    row TEXT NOT NULL,
    PRIMARY KEY (cell, position)
);
"""


class StoreError(RuntimeError):
    """The run folder cannot be used as asked (locked, damaged, or a changed plan without --force)."""


def damaged_journal_message(journal: Path, error: Exception) -> str:
    """One sentence for a journal SQLite cannot read: what, where, what to do."""
    return (
        f"the run journal {journal} is damaged ({error}); move it aside (e.g. `mv {journal} "
        f"{journal}.damaged`, with its -wal and -shm files) and rerun the same command: the cells are "
        "recomputed into a fresh journal (artifact files with the same bytes are kept)"
    )


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the run folder
    sha256: str


class ArtifactFolder:
    """The content-addressed ``artifacts/`` of a run folder: no lock, no journal.

    Workers of any executor write here: a file is named by the SHA-256 of its bytes and
    written atomically, so two writers of the same bytes cannot corrupt each other, and
    the driver checks every hash before it records a cell as done.
    """

    def __init__(self, run_dir: Path):
        self.root = Path(run_dir)

    def put(self, data: bytes, suffix: str) -> Artifact:
        digest = sha256_bytes(data)
        relative = Path("artifacts") / digest[:2] / f"{digest}{suffix}"
        target = self.root / relative
        if not (target.exists() and sha256_file(target) == digest):
            write_atomic(target, data)
        return Artifact(relative.as_posix(), digest)

    def path(self, artifact: Artifact | str) -> Path:
        return self.root / (artifact.path if isinstance(artifact, Artifact) else artifact)

    def intact(self, artifacts: Iterable[Artifact]) -> bool:
        """Every file exists and still hashes to what was recorded."""
        for artifact in artifacts:
            path = self.path(artifact)
            if not path.exists() or sha256_file(path) != artifact.sha256:
                return False
        return True


class RunStore:
    """One run folder. Use as a context manager: it takes the lock and opens the journal."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_name = self.run_dir.name
        self.artifacts = ArtifactFolder(self.run_dir)
        self._lock_handle = None
        self.db: sqlite3.Connection | None = None

    # -- lifetime -----------------------------------------------------------
    def __enter__(self) -> RunStore:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise StoreError(
                f"--out {self.run_dir} is a file, not a folder; give a folder for the run (it is created if missing)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        journal = self.run_dir / "journal.sqlite"
        try:
            self.db = sqlite3.connect(journal, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            # quick_check reads every page once: a damaged journal is named here, not mid-run.
            verdict = self.db.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise sqlite3.DatabaseError(verdict[0] if verdict else "quick_check returned nothing")
            self.db.executescript(SCHEMA)
            self._add_missing_columns()
            self._recover_interrupted()
        except sqlite3.DatabaseError as error:
            self.__exit__(None, None, None)
            raise StoreError(damaged_journal_message(journal, error)) from None
        return self

    def __exit__(self, *exc) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _take_lock(self) -> None:
        handle = open(self.run_dir / ".lock", "a+")  # noqa: SIM115 - held open (and locked) for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"run folder {self.run_dir} is in use by {holder}; wait for it to finish or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def _recover_interrupted(self) -> None:
        """We hold the lock, so any ``running`` cell belongs to a process that is gone."""
        count = self.db.execute("UPDATE cells SET state='pending', pid=NULL WHERE state='running'").rowcount
        if count:
            log.warning("%d cell(s) were interrupted by a crash or kill; they will be recomputed", count)

    # -- manifest -----------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.run_dir / "manifest.json"

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(
                f"{self.manifest_path} is damaged ({error}); move it aside and rerun the same "
                "command (finished cells in the journal are still reused)"
            ) from None
        if not isinstance(manifest, dict):
            raise StoreError(
                f"{self.manifest_path} is damaged (not a JSON object); move it aside and rerun "
                "the same command (finished cells in the journal are still reused)"
            )
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    # -- cells --------------------------------------------------------------
    def cell_state(self, key: str) -> tuple[str, str | None] | None:
        found = self.db.execute("SELECT state, reason FROM cells WHERE key=?", (key,)).fetchone()
        return (found[0], found[1]) if found else None

    def finished_keys(self) -> set[str]:
        """The keys of every cell recorded done."""
        return {key for (key,) in self.db.execute("SELECT key FROM cells WHERE state='done'")}

    def _add_missing_columns(self) -> None:
        """A journal written before a column existed gains it (the default holds for its rows)."""
        present = {row[1] for row in self.db.execute("PRAGMA table_info(cells)")}
        if "consumed" not in present:
            self.db.execute("ALTER TABLE cells ADD COLUMN consumed TEXT NOT NULL DEFAULT '[]'")

    def done_artifacts(self, key: str, consumed: list[str] | None = None) -> list[Artifact] | None:
        """The artifacts of a finished, intact cell; ``None`` if it must be (re)computed.

        A cell whose artifact was flipped or truncated is reported with a warning and
        put back to pending, so a corrupt file is never reported. With ``consumed`` (the
        SHA-256 of every artifact the cell reads now), a cell computed from other input
        bytes is stale and recomputed: an attack keyed on its protect cell's key must not
        outlive a protected PNG that came out differently (a GPU run without
        ``--deterministic``, or a recomputed corrupt artifact).
        """
        found = self.db.execute("SELECT state, artifacts, consumed FROM cells WHERE key=?", (key,)).fetchone()
        if not found or found[0] != "done":
            return None
        artifacts = [Artifact(**a) for a in json.loads(found[1])]
        if not self.artifacts.intact(artifacts):
            log.warning("cached artifact of cell %s is missing or fails its SHA-256 check; recomputing", key[:12])
            self.db.execute("UPDATE cells SET state='pending' WHERE key=?", (key,))
            return None
        if consumed is not None and json.loads(found[2]) != consumed:
            log.warning("cell %s was computed from inputs that have changed since; recomputing", key[:12])
            self.db.execute("UPDATE cells SET state='pending' WHERE key=?", (key,))
            return None
        return artifacts

    def mark_running(self, key: str, kind: str, label: dict) -> None:
        self.db.execute(
            "INSERT INTO cells (key, kind, label, state, pid, updated_utc) VALUES (?, ?, ?, 'running', ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET state='running', pid=excluded.pid, reason=NULL, "
            "updated_utc=excluded.updated_utc",
            (key, kind, json.dumps(label, sort_keys=True), os.getpid(), time.time()),
        )

    def mark_done(self, key: str, artifacts: list[Artifact], rows: list[dict], consumed: list[str] = ()) -> None:
        """Rows, artifact hashes and the hashes of the inputs the cell read land in the
        same transaction that marks the cell done."""
        with self._transaction():
            self._replace_rows(key, rows)
            self.db.execute(
                "UPDATE cells SET state='done', pid=NULL, reason=NULL, artifacts=?, consumed=?, updated_utc=? "
                "WHERE key=?",
                (json.dumps([a.__dict__ for a in artifacts]), json.dumps(list(consumed)), time.time(), key),
            )

    def mark_failed(self, key: str, reason: str, rows: list[dict]) -> None:
        with self._transaction():
            self._replace_rows(key, rows)
            self.db.execute(
                "UPDATE cells SET state='failed', pid=NULL, reason=?, updated_utc=? WHERE key=?",
                (reason, time.time(), key),
            )

    def _replace_rows(self, key: str, rows: list[dict]) -> None:
        """The cell's rows, in order, replacing any it had (inside the caller's transaction)."""
        self.db.execute("DELETE FROM rows WHERE cell=?", (key,))
        self.db.executemany(
            "INSERT INTO rows (cell, position, row) VALUES (?, ?, ?)",
            [(key, i, json.dumps(row, sort_keys=True, default=str)) for i, row in enumerate(rows)],
        )

    def _transaction(self):
        db = self.db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *_):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def cell_rows(self, key: str) -> list[dict]:
        return [
            json.loads(r[0]) for r in self.db.execute("SELECT row FROM rows WHERE cell=? ORDER BY position", (key,))
        ]

    # -- rows.csv -----------------------------------------------------------
    def write_rows_csv(self, cell_order: Iterable[str]) -> Path:
        """Rebuild ``rows.csv`` from the journal, cells in plan order (deterministic)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for key in cell_order:
            for row in self.cell_rows(key):
                writer.writerow({column: csv_value(row.get(column)) for column in COLUMNS})
        path = self.run_dir / "rows.csv"
        write_atomic(path, buffer.getvalue().encode())
        return path


def measured_cell_seconds(run_dir: Path) -> tuple[float, int] | None:
    """The mean wall-clock seconds of the finished cells in ``run_dir``'s journal, and how many.

    Read from the cells' own ``cost``/``wall_s`` rows (what :mod:`cloakbench.bench.profiling`
    measured as each cell ran), read-only and without the run's lock; ``None`` when the folder
    holds no journal or no finished cell with a time (nothing measured yet).
    """
    journal = Path(run_dir) / "journal.sqlite"
    if not journal.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=2)
        try:
            found = db.execute(
                "SELECT rows.row FROM rows JOIN cells ON cells.key = rows.cell WHERE cells.state = 'done' "
                "AND rows.row LIKE '%\"wall_s\"%'"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    seconds = []
    for (text,) in found:
        row = json.loads(text)
        if row.get("pair") == "cost" and row.get("metric") == "wall_s" and isinstance(row.get("value"), int | float):
            seconds.append(float(row["value"]))
    return (sum(seconds) / len(seconds), len(seconds)) if seconds else None


def say_duration(seconds: float) -> str:
    """``90`` -> ``1.5 min``; seconds, minutes, hours or days, whichever reads best."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size if unit == "days" else seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


#: Filesystem types of ``/proc/mounts`` on which SQLite's locking is unreliable.
NETWORK_FILESYSTEMS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smb2",
    "smbfs",
    "fuse.sshfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "lustre",
    "beegfs",
    "gpfs",
    "fuse.s3fs",
    "fuse.gcsfuse",
)


def network_filesystem(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """The network filesystem type ``path`` lives on (``nfs4``, ``cifs``…), or ``None`` (local,
    or not detectable on this system). The journal is SQLite: its locks and WAL need a local
    disk (https://www.sqlite.org/wal.html, "WAL does not work over a network filesystem")."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    target, missing = Path(path).absolute(), []
    while not target.exists() and target != target.parent:  # --out is made later: its first existing folder
        target, missing = target.parent, [target.name] + missing
    target = target.resolve().joinpath(*missing)
    best, best_type = -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, best_type = len(point.parts), fields[2]
    return best_type if best_type in NETWORK_FILESYSTEMS else None
