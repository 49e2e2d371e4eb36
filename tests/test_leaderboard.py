"""The leaderboard: released protocols never change, entries verify against their own cells, tampering is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cloakbench.bench.leaderboard import EntryError, verify_entry
from cloakbench.bench.protocol import PROTOCOLS_DIR, ProtocolError, load_protocol, released_hashes
from cloakbench.core.provenance import sha256_file

ENTRIES = Path(__file__).resolve().parent.parent / "leaderboard" / "v1-toy"
#: The released protocols and their SHA-256, written here as well as in protocols/RELEASED.sha256:
#: changing a released file (or the list) fails this test. A new protocol is a new file and a new line.
RELEASED = {"v1-toy.toml": "62b0ff203914dcd392b286e4c8fd0e5b76b6e1cfa1586a4494f8f63a4aa37ece"}


def test_released_protocols_are_unchanged():
    assert released_hashes() == RELEASED
    for name, digest in RELEASED.items():
        assert sha256_file(PROTOCOLS_DIR / name) == digest, f"{name} changed after release: make a new version"
        assert load_protocol(name.removesuffix(".toml")).status == "released"


def test_an_edited_released_protocol_is_refused(tmp_path, monkeypatch):
    edited = tmp_path / "v1-toy.toml"
    edited.write_text((PROTOCOLS_DIR / "v1-toy.toml").read_text().replace("values = [4, 8, 16]", "values = [4, 8]"))
    with pytest.raises(ProtocolError, match="released"):
        load_protocol(str(edited))


def test_a_draft_needs_to_be_asked_for():
    with pytest.raises(ProtocolError, match="draft"):
        load_protocol("v1-sd15")
    assert load_protocol("v1-sd15", allow_draft=True).status == "draft"


def copy_entry(tmp_path: Path, name: str = "noise") -> Path:
    shutil.copy(ENTRIES / f"{name}.json", tmp_path / f"{name}.json")
    shutil.copytree(ENTRIES / name, tmp_path / name)
    return tmp_path / f"{name}.json"


@pytest.mark.skipif(not (ENTRIES / "noise.json").is_file(), reason="no committed v1-toy entry")
def test_a_committed_entry_agrees_with_its_cells_and_an_edited_number_does_not(tmp_path):
    path = copy_entry(tmp_path)
    assert verify_entry(path, tmp_path / "work", recompute=False).agrees
    entry = json.loads(path.read_text())
    entry["figures"]["budgets"][1]["measured"]["mean"] += 0.01
    path.write_text(json.dumps(entry))
    verdict = verify_entry(path, tmp_path / "work", recompute=False)
    assert not verdict.agrees and any("measured.mean" in d for d in verdict.disagreements)


@pytest.mark.skipif(not (ENTRIES / "noise.json").is_file(), reason="no committed v1-toy entry")
def test_an_entry_whose_images_do_not_match_their_hashes_is_refused(tmp_path):
    path = copy_entry(tmp_path)
    image = next((tmp_path / "noise").rglob("*.png"))
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    with pytest.raises(EntryError, match="SHA-256"):
        verify_entry(path, tmp_path / "work", recompute=False)
