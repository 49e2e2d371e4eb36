"""Names users type resolve to exactly one thing: ``noise`` is a protection and a purification."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.bench.plan import REGISTRIES, Components
from cloakbench.bench.spec import CompareSpec
from cloakbench.core.config import ConfigError, qualify_overrides


def test_a_bare_name_two_kinds_share_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"ambiguous.*protection:noise\.FIELD or mimicry:noise\.FIELD"):
        qualify_overrides({"noise": {"eps": "8"}}, REGISTRIES)


def test_qualified_names_reach_each_component():
    spec = CompareSpec(
        methods="noise",
        attacks="noise+sdedit",
        model="tiny-random",
        overrides={"protection:noise": {"eps": "8"}, "mimicry:noise": {"sigma": "0.1"}},
    )
    components = Components.from_spec(spec)
    assert components.protections["noise"].config.eps == 8.0
    purifications, _ = components.attacks["noise+sdedit"]
    assert purifications[0].config.sigma == 0.1


def test_unique_bare_names_and_did_you_mean():
    assert qualify_overrides({"sds-": {"steps": "2"}}, REGISTRIES) == {("protection", "sds-"): {"steps": "2"}}
    with pytest.raises(ConfigError, match=r"did you mean 'sdedit'"):
        qualify_overrides({"sdedt": {"steps": "2"}}, REGISTRIES)
    with pytest.raises(ConfigError, match=r"unknown kind 'attack'"):
        qualify_overrides({"attack:sdedit": {"steps": "2"}}, REGISTRIES)
    with pytest.raises(ConfigError, match=r"'sdedit' is no protection"):
        qualify_overrides({"protection:sdedit": {"steps": "2"}}, REGISTRIES)


def test_bench_list_shows_each_names_kind():
    listing = CliRunner().invoke(app, ["list"], env={"COLUMNS": "300"})
    assert listing.exit_code == 0
    lines = [line for line in listing.stdout.splitlines() if "│ noise " in line]
    assert any("protection" in line and "also a mimicry name" in line for line in lines), lines
    assert any("purification" in line and "also a protection name" in line for line in lines), lines


def test_compare_refuses_the_ambiguous_form_with_one_sentence(tmp_path):
    done = CliRunner().invoke(
        app,
        [
            "compare",
            "--methods",
            "noise",
            "--attacks",
            "noise+sdedit",
            "--set",
            "noise.eps=8",
            "--model",
            "tiny-random",
            "--quick",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert done.exit_code != 0
    assert "protection:noise.FIELD or mimicry:noise.FIELD" in done.output
    assert "Traceback" not in done.output
