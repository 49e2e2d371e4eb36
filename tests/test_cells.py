"""The typed plan: cells are pure, serialisable data, planned without loading a model."""

from __future__ import annotations

import json

import pytest

from cloakbench.bench.plan import Cell, Components, build_plan
from cloakbench.bench.spec import CompareSpec
from cloakbench.core.images import load_images
from cloakbench.core.zoo import model_facts
from tests.support.grid import write_images


@pytest.fixture()
def planned(tmp_path, monkeypatch):
    import torch

    def no_loading(*args, **kwargs):
        raise AssertionError("planning must not build a model")

    # Every model build constructs torch modules, however the loader was imported (a
    # `from ... import load_model` inside plan.py included): refuse them all while planning.
    monkeypatch.setattr(torch.nn.Module, "__init__", no_loading)
    spec = CompareSpec(
        images=[str(write_images(tmp_path / "in", count=2))],
        methods="noise,sds-",
        attacks="sdedit,jpeg+sdedit,textual-inversion",
        model="tiny-random",
        quick=True,
        out=tmp_path / "run",
    )
    facts = model_facts(spec.model)
    intake = load_images(spec.images, facts.resolution)
    return spec, build_plan(spec, Components.from_spec(spec), facts, intake)


def test_a_plan_is_pure_and_deterministic(planned):
    spec, plan = planned
    again = build_plan(
        spec,
        Components.from_spec(spec),
        model_facts(spec.model),
        load_images(spec.images, model_facts(spec.model).resolution),
    )
    assert [c.key for c in plan.cells] == [c.key for c in again.cells]
    assert plan.hash == again.hash
    assert len({c.key for c in plan.cells}) == len(plan.cells)  # every cell its own key


def test_cells_survive_json_and_name_their_dependencies(planned):
    _, plan = planned
    keys = {c.key: c for c in plan.cells}
    for cell in plan.cells:
        assert Cell.from_dict(json.loads(json.dumps(cell.to_dict()))) == cell
        for key in cell.inputs:
            assert keys[key].kind == "protect" and keys[key].stage < cell.stage
        if cell.twin:
            assert keys[cell.twin].protection == "none" and keys[cell.twin].attack == cell.attack
    # 3 protections x 2 images, 2 per-image attacks x 3 x 2, one per-set attack x 3
    assert [len(stage) for stage in plan.stages()] == [6, 4 + 1, 8 + 2]
    set_cells = [c for c in plan.cells if c.scope == "set"]
    assert all(len(c.images) == 2 and len(c.inputs) == 2 for c in set_cells)


def test_clean_and_protected_twins_share_the_attack_seed(planned):
    _, plan = planned
    attacks = [c for c in plan.cells if c.kind == "attack" and c.attack == "sdedit"]
    by_image = {}
    for cell in attacks:
        by_image.setdefault(cell.images[0].pixel_hash, set()).add(cell.seed)
    assert all(len(seeds) == 1 for seeds in by_image.values())


def test_an_encoder_harden_cell_keys_the_protections_it_trains_against(tmp_path):
    """encoder-harden's pairs come from the protections of ``against`` with the run's ``--set``: a
    setting of one of them changes the keys of its chain's cells (a stale encoder is never reused),
    a setting of another protection changes no key, and chains without it keep their keys."""
    images = [str(write_images(tmp_path / "in", count=2))]
    facts = model_facts("tiny-random")
    intake = load_images(images, facts.resolution)

    def keys(against: str, overrides: dict) -> dict[tuple[str, str, str], str]:
        spec = CompareSpec(
            images=images,
            methods="noise",
            attacks="sdedit,encoder-harden+sdedit",
            model="tiny-random",
            quick=True,
            out=tmp_path / "run",
            overrides={"encoder-harden": {"against": against}, **overrides},
        )
        plan = build_plan(spec, Components.from_spec(spec), facts, intake)
        return {(c.attack, c.protection, c.images[0].pixel_hash): c.key for c in plan.cells if c.kind == "attack"}

    def changed(before: dict, after: dict) -> set[str]:
        assert before.keys() == after.keys()
        return {cell[0] for cell in before if before[cell] != after[cell]}

    # sds- is not among --methods: only the copier runs it.
    base = keys("sds-", {})
    assert changed(base, keys("sds-", {"sds-": {"steps": "2"}})) == {"encoder-harden+sdedit"}
    assert changed(base, keys("sds-", {"mist": {"steps": "2"}})) == set()
    # against = all: every public protection's settings count.
    every = keys("all", {})
    assert changed(every, keys("all", {"mist": {"steps": "2"}})) == {"encoder-harden+sdedit"}
    # the protections' identities, not only their names, are in the key: another against, other keys
    assert changed(base, keys("mist", {})) == {"encoder-harden+sdedit"}
