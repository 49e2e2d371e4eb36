"""Files written whole or not at all: the one atomic write of the project.

A run folder, a report, a sidecar or a benchmark file is never seen half written, even if the
process is killed or the disk fills mid-write (docs/RELIABILITY.md, "Store").
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask (read from /proc where it exists, so no other thread sees it changed)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then ``os.replace``: never a half file.

    ``mkstemp`` creates the file 0600; it gets ``0666 & ~umask`` like any file the user
    creates, so a shared run folder stays readable by the team (docs/RELIABILITY.md, "Store").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
