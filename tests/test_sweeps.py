"""Sweeps and seeds: every swept configuration is its own instance; seeds repeat cells; keys stay stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloakbench.bench.cli.options import merged_sweeps
from cloakbench.bench.plan import Components, build_plan
from cloakbench.bench.spec import CompareSpec, parse_sweep_options
from cloakbench.core.config import ConfigError, parse_int_list
from cloakbench.core.images import load_images
from cloakbench.core.zoo import model_facts
from tests.support.grid import write_images


@pytest.fixture(scope="module")
def intake(tmp_path_factory):
    return load_images([str(write_images(tmp_path_factory.mktemp("images"), count=2))], 64)


def plan_for(intake, **spec_fields):
    spec = CompareSpec(model="tiny-random", metrics="psnr", out=Path("run"), **spec_fields)
    return build_plan(spec, Components.from_spec(spec), model_facts("tiny-random"), intake)


def test_a_swept_setting_gives_one_instance_per_value_with_a_canonical_setting():
    spec = CompareSpec(methods="noise,sds-", sweeps=merged_sweeps({}, ["sds-.eps=4,16", "protection:noise.eps=8"]))
    components = Components.from_spec(spec)
    assert components.protection_variants == [("none", ""), ("noise", "eps=8"), ("sds-", "eps=4"), ("sds-", "eps=16")]
    assert components.protections["sds-[eps=4]"].config.eps == 4.0
    assert components.protections["sds-[eps=16]"].config.eps == 16.0


def test_a_toml_sweep_keys_the_same_cells_as_the_command_line(intake):
    from_flags = plan_for(intake, methods="sds-", sweeps=parse_sweep_options(["sds-.eps=4,8"]))
    from_file = plan_for(intake, methods="sds-", sweeps=merged_sweeps({"sweep": {"sds-": {"eps": [4, 8]}}}, []))
    assert [c.key for c in from_flags.cells] == [c.key for c in from_file.cells]


def test_a_list_valued_setting_keeps_its_meaning_and_sweeps_with_semicolons():
    spec = CompareSpec(methods="noise", attacks="sdedit", sweeps=parse_sweep_options(["sdedit.strengths=0.3,0.5;0.7"]))
    components = Components.from_spec(spec)
    assert [s for _, s in components.attack_variants] == ["strengths=[0.3;0.5]", "strengths=[0.7]"]
    assert components.attacks["sdedit[strengths=[0.7]]"][1].config.strengths == (0.7,)


@pytest.mark.parametrize(
    "sweeps, overrides, message",
    [
        (["sds-.epsilon=4,8"], {}, r"sds- has no setting 'epsilon'"),
        (["advdm.eps=4,8"], {}, r"--sweep names protection:advdm, which this run does not use"),
        (["sds-.eps=4,8"], {"sds-": {"eps": "8"}}, r"sds-.eps is given by both --set and --sweep"),
        (["sds-.eps=4,300"], {}, r"sds-.eps: 300 is outside"),
        (["noise.eps=4,8"], {}, r"--sweep noise.FIELD is ambiguous"),
    ],
)
def test_bad_sweeps_are_one_clear_error(sweeps, overrides, message):
    spec = CompareSpec(methods="sds-", attacks="jpeg+sdedit", sweeps=parse_sweep_options(sweeps), overrides=overrides)
    with pytest.raises(ConfigError, match=message):
        Components.from_spec(spec)


def test_sweep_and_seed_options_refuse_malformed_text():
    with pytest.raises(ConfigError, match=r"expected NAME.FIELD=V1,V2"):
        parse_sweep_options(["sds-eps=4"])
    with pytest.raises(ConfigError, match=r"--seeds '0,x'"):
        parse_int_list("0,x", "--seeds")


def test_seeds_repeat_every_cell_and_the_first_seed_keeps_the_single_seed_keys(intake):
    single = plan_for(intake, methods="noise", attacks="sdedit")
    repeated = plan_for(intake, methods="noise", attacks="sdedit", seeds=[0, 1])
    assert len(repeated.cells) == 2 * len(single.cells)
    assert {c.run_seed for c in repeated.cells} == {0, 1}
    assert [c.key for c in repeated.cells if c.run_seed == 0] == [c.key for c in single.cells]
    assert len({c.key for c in repeated.cells}) == len(repeated.cells)
    # Clean and protected twins share the run seed they derive from.
    for cell in repeated.cells:
        if cell.twin:
            twin = next(c for c in repeated.cells if c.key == cell.twin)
            assert (twin.run_seed, twin.seed) == (cell.run_seed, cell.seed)


def test_widening_a_sweep_keeps_every_existing_key(intake):
    narrow = plan_for(intake, methods="sds-", sweeps=parse_sweep_options(["sds-.eps=4,16"]))
    wide = plan_for(intake, methods="sds-", sweeps=parse_sweep_options(["sds-.eps=4,8,16"]))
    assert {c.key for c in narrow.cells} < {c.key for c in wide.cells}
    assert narrow.hash != wide.hash


def test_the_paper_table_config_plans_every_protection_budget_category_and_seed(tmp_path):
    import importlib.util

    from cloakbench.bench.cli.options import merged_overrides, read_config
    from cloakbench.core.datasets import load_dataset

    root = Path(__file__).resolve().parent.parent
    loader = importlib.util.spec_from_file_location("paper_table_data", root / "configs" / "paper_table_data.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    module.main(tmp_path / "data")
    file = read_config(root / "configs" / "paper_table.toml", "compare")
    spec = CompareSpec(
        images=[str(tmp_path / "data")],
        methods=file["methods"],
        attacks=file["attacks"],
        model=file["model"],
        seeds=parse_int_list(file["seeds"], "--seeds"),
        sweeps=merged_sweeps(file, []),
        overrides=merged_overrides(file, []),
        quick=True,
    )
    components = Components.from_spec(spec)
    dataset = load_dataset(spec.images, model_facts("toy").resolution)
    plan = build_plan(spec, components, model_facts("toy"), dataset)
    budgets = {setting for name, setting in components.protection_variants if name != "none"}
    assert budgets == {"eps=4", "eps=8", "eps=16"}
    from cloakbench.protections import publishable_protections

    every = [n for n in publishable_protections() if n != "none"]
    assert {name for name, _ in components.protection_variants} == {"none", *every}
    assert len(components.protection_variants) == 1 + 3 * len(every)  # every protection at every budget
    assert {dataset.of(im).category for im in dataset.images} == set(module.CATEGORIES)
    assert all(dataset.of(im).prompt for im in dataset.images)
    protect = [c for c in plan.cells if c.kind == "protect"]
    assert len(protect) == len(components.protection_variants) * 4 * 3  # variants x images x seeds
    assert len(plan.cells) == 3 * len(protect)  # each protected image attacked by SDEdit and by inpainting
    assert components.attacks["inpaint"][1].config.mask == "background"


def test_compare_flags_reach_the_spec_and_bad_ones_are_one_sentence(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cloakbench.bench.compare
    from cloakbench.bench.cli.app import app

    seen = {}

    def record(spec, *_, **__):
        seen["spec"] = spec
        raise ConfigError("stop here")  # the spec is all this test needs

    monkeypatch.setattr(cloakbench.bench.compare, "run_compare", record)
    runner = CliRunner()
    runner.invoke(
        app,
        [
            "compare",
            "--sweep",
            "sds-.eps=4,16",
            "--seeds",
            "0,1",
            "--attack-model",
            "toy,tiny-random",
            "--attack-model",
            "other",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    spec = seen["spec"]
    assert (spec.sweeps, spec.seeds, spec.attack_models) == (
        {"sds-": {"eps": "4,16"}},
        [0, 1],
        ["toy", "tiny-random", "other"],
    )
    bad = runner.invoke(app, ["compare", "--seeds", "0,x", "--out", str(tmp_path / "run")])
    assert bad.exit_code != 0 and "--seeds '0,x'" in " ".join(bad.output.split())
    assert "Traceback" not in bad.output
