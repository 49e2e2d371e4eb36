"""Issue #30, bad input round three: each case generates its bad input and checks the one sentence,
exit status 2 and no traceback (docs/RELIABILITY.md). Every refusal here comes before any cell runs,
so the tests run no model work."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def picture(path, seed=0, size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def assert_refused(result, *words: str) -> None:
    """Exit 2, one ``error:`` sentence holding every word, no traceback, no cell run."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    flat = " ".join(result.output.split())
    for word in words:
        assert word in flat or word in result.output.replace("\n", ""), (word, result.output)
    assert "cells" not in flat.split("error:")[0], result.output  # refused before the plan ran


def compare(tmp_path, *extra):
    return run("compare", "--model", "tiny-random", "--quick", "--methods", "none", "--metrics", "psnr",
               "--out", tmp_path / "run", "--no-report", *extra)  # fmt: skip


# -- 1. config and prompt files ------------------------------------------------------------------
def category_folder(tmp_path, prompts_toml: bytes | str):
    folder = tmp_path / "art"
    picture(folder / "landscape" / "hill.png")
    picture(folder / "portrait" / "ann.png", seed=1)
    raw = prompts_toml.encode() if isinstance(prompts_toml, str) else prompts_toml
    (folder / "prompts.toml").write_bytes(raw)
    return folder


def test_prompts_file_that_is_not_a_table_of_tables(tmp_path):
    folder = category_folder(tmp_path, 'prompts = "a photo"\n')
    assert_refused(compare(tmp_path, "--images", folder), "prompts.toml", '"prompts" must be a table')


def test_utf16_prompts_file_is_named(tmp_path):
    folder = category_folder(tmp_path, '[prompts]\nlandscape = "a hill"\n'.encode("utf-16"))
    assert_refused(compare(tmp_path, "--images", folder), "prompts.toml", "UTF-16", "save it as UTF-8")


def test_utf16_config_file_is_named(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_bytes("[compare]\nseed = 1\n".encode("utf-16"))
    assert_refused(compare(tmp_path, "--config", config), "exp.toml", "UTF-16", "save it as UTF-8")


def test_utf8_bom_config_file_is_read(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_bytes("\ufeff[compare]\nseed = 1\nmodel = 3\n".encode())  # read past the BOM: the bad type is found
    assert_refused(compare(tmp_path, "--config", config), "model = 3", "must be a string")


def test_prompt_category_that_matches_no_image_is_refused(tmp_path):
    folder = category_folder(tmp_path, '[prompts]\nlandscpe = "a hill"\nportrait = "a person"\n')
    assert_refused(
        compare(tmp_path, "--images", folder), "prompts.toml", "'landscpe' matches no image",
        "did you mean 'landscape'", "landscape, portrait",
    )  # fmt: skip


def test_prompt_category_of_a_manifest_that_matches_no_row(tmp_path):
    picture(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("path,category\na.png,cat\n")
    (tmp_path / "prompts.toml").write_text('dog = "a dog"\n')
    assert_refused(compare(tmp_path, "--images", tmp_path / "list.csv"), "'dog' matches no image", "cat")


@pytest.mark.parametrize(
    "line, words",
    [
        ('[set."protection:noise"]\neps = true', ("noise.eps", "expected a number, got True")),
        ("[set.sdedit]\nstrengths = [[0.3]]", ("sdedit.strengths", "expected a list of numbers")),
        ("[set.sdedit]\nsteps = [3]", ("sdedit", "expected a whole number")),
        ('[compare]\nquick = "false"', ('quick = "false"', "must be true or false")),
        ('[compare]\nimages = "pix"', ('images = "pix"', "must be a list of strings", 'images = ["..."]')),
        ('[compare]\nseed = "abc"', ('seed = "abc"', "must be a whole number")),
        ("[compare]\nprompt = 3", ("prompt = 3", "must be a string")),
        ("[compare]\ncell_timeout = true", ("cell_timeout = true", "must be a number")),
        ('[compare]\nattacks = ["sdedit", 3]', ("attacks", "expected a list of strings")),
    ],
)
def test_config_key_types_are_checked_before_work(tmp_path, line, words):
    config = tmp_path / "exp.toml"
    config.write_text(line + "\n")
    assert_refused(compare(tmp_path, "--config", config, "--methods", "none,noise"), "exp.toml", *words)


def test_config_attacks_as_a_list_is_a_comma_list(tmp_path):
    """A TOML list for a comma-list flag is that list: it reaches the plan (here, refused for an unknown name)."""
    config = tmp_path / "exp.toml"
    config.write_text('[compare]\nattacks = ["sdedit", "sdeditt"]\n')
    assert_refused(compare(tmp_path, "--config", config), "sdeditt", "did you mean")


# -- 2. sweeps, seeds, --set, attacks ------------------------------------------------------------
def one_image(tmp_path):
    return picture(tmp_path / "in" / "a.png").parent


def test_repeated_sweep_of_one_field_is_refused(tmp_path):
    result = compare(
        tmp_path, "--images", one_image(tmp_path), "--methods", "none,noise",
        "--sweep", "protection:noise.eps=4", "--sweep", "protection:noise.eps=8",
    )  # fmt: skip
    assert_refused(result, "--sweep protection:noise.eps is given twice", "protection:noise.eps=4,8")


def test_a_plan_of_100000_cells_is_refused_without_yes(tmp_path):
    eps = ",".join(str(v) for v in range(1, 201))  # 201 protections x (protect + sdedit) = 402 cells per seed
    seeds = ",".join(str(s) for s in range(250))  # x 250 seeds = 100,500 cells
    result = compare(
        tmp_path, "--images", one_image(tmp_path), "--methods", "none,noise", "--attacks", "sdedit",
        "--sweep", f"protection:noise.eps={eps}", "--seeds", seeds,
    )  # fmt: skip
    assert_refused(result, "this plan has 100,500 cells", "pass --yes or narrow it")
    assert not (tmp_path / "run").exists()


def test_count_cells_is_the_number_of_cells_the_plan_makes(tmp_path):
    from cloakbench.bench.plan import Components, build_plan, count_cells
    from cloakbench.bench.spec import CompareSpec
    from cloakbench.core.datasets import load_dataset
    from cloakbench.core.zoo import model_facts

    picture(tmp_path / "in" / "b.png", seed=3)
    spec = CompareSpec(
        images=[str(one_image(tmp_path))], methods="none,noise", attacks="sdedit,jpeg+sdedit,textual-inversion",
        model="tiny-random", seeds=[0, 1], sweeps={"protection:noise": {"eps": "4,8"}}, shard=(0, 1),
    )  # fmt: skip
    facts = model_facts("tiny-random")
    intake = load_dataset(spec.images, facts.resolution)
    components = Components.from_spec(spec)
    assert count_cells(spec, components, intake) == len(build_plan(spec, components, facts, intake).cells) > 0


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_seed_beyond_a_torch_generator_is_named(tmp_path, seed):
    assert_refused(compare(tmp_path, "--seed", seed), f"--seed {seed}", "a torch generator takes seeds")


def test_seeds_beyond_a_torch_generator_are_named(tmp_path):
    assert_refused(compare(tmp_path, "--seeds", f"0,{2**64}"), "--seeds", "at most 18446744073709551615")


def test_empty_seeds_are_refused(tmp_path):
    assert_refused(compare(tmp_path, "--seeds", ""), "--seeds ''", "no value given")


def test_empty_list_setting_is_refused(tmp_path):
    assert_refused(compare(tmp_path, "--set", "sdedit.strengths="), "sdedit.strengths", "no value given")


def test_duplicate_values_of_a_list_setting_are_refused(tmp_path):
    assert_refused(compare(tmp_path, "--set", "sdedit.strengths=0.3,0.3"), "sdedit.strengths", "0.3 is given twice")


def test_duplicate_values_in_a_config_list_are_refused(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text("[set.sdedit]\nstrengths = [0.3, 0.3]\n")
    assert_refused(compare(tmp_path, "--config", config), "exp.toml", "0.3 is given twice")


@pytest.mark.parametrize("attacks", ["sdedit+", "+sdedit", "jpeg++sdedit"])
def test_attack_chain_with_an_empty_name_is_refused(tmp_path, attacks):
    assert_refused(compare(tmp_path, "--attacks", attacks), f"--attacks {attacks!r}", "a name is missing around '+'")


def test_spaced_attack_chain_is_one_chain():
    from cloakbench.mimicry.base import resolve_attacks

    assert resolve_attacks("jpeg + sdedit,jpeg+sdedit") == ["jpeg+sdedit"]


@pytest.mark.parametrize("timeout", ["1e12", "inf", "0"])
def test_cell_timeout_out_of_range_names_its_range(tmp_path, timeout):
    assert_refused(compare(tmp_path, "--cell-timeout", timeout), "--cell-timeout", "(0, 31536000]")


def test_attack_model_without_an_inpainting_unet_is_refused_in_the_plan(tmp_path):
    result = compare(tmp_path, "--images", one_image(tmp_path), "--attacks", "inpaint", "--attack-model", "toy-b")
    assert_refused(result, "--attacks inpaint needs an inpainting UNet", "model toy-b has none", "--attack-model")
    assert not (tmp_path / "run").exists()
