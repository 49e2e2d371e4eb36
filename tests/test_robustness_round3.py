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


# -- 3. executors --------------------------------------------------------------------------------
def fake_tasks(count: int):
    from types import SimpleNamespace

    return [SimpleNamespace(cell=SimpleNamespace(model="m", protection_key=f"p{i}", key=f"k{i}")) for i in range(count)]


def test_local_workers_are_capped_at_the_cells_and_the_cores_and_it_is_said(monkeypatch):
    from cloakbench.bench import executors
    from cloakbench.bench.spec import CompareSpec

    monkeypatch.setattr(executors, "available_cores", lambda: 4)
    pool = executors.LocalPoolExecutor(CompareSpec(), None, None, workers=64, threads=1)
    assert pool.pool_size(3) == 3 and pool.pool_size(100) == 4
    assert executors.LocalPoolExecutor(CompareSpec(), None, None, workers=64, threads=2).pool_size(100) == 2
    spawned = []
    monkeypatch.setattr(pool, "_spawn", lambda: spawned.append(1))
    events = pool.run(fake_tasks(3))
    note = next(events)  # said before any worker starts
    assert isinstance(note, executors.WorkerNote) and note.info["state"] == "capped", note
    assert "--workers 64: starting 3 worker(s), for 3 cell(s) to run on 4 core(s)" in note.info["message"]
    assert not spawned
    events.close()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ray_address_with_nothing_listening_is_one_sentence(tmp_path):
    port = free_port()
    result = compare(tmp_path, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert_refused(result, f"--ray-address 127.0.0.1:{port}", "no Ray cluster answers there", "ray start --head")
    assert not (tmp_path / "run").exists()


def test_ray_address_that_is_no_address_is_refused(tmp_path):
    assert_refused(compare(tmp_path, "--executor", "ray", "--ray-address", "headnode"), "expected auto, HOST:PORT")


class GoneDriver:
    """A worker's end of the pipe once the driver is dead: every send breaks, every receive ends."""

    def send(self, message):
        raise BrokenPipeError(32, "Broken pipe")

    def recv(self):
        raise EOFError


@pytest.mark.parametrize("gone_at", ["ready", "recv"])
def test_a_worker_whose_driver_is_gone_returns_quietly(monkeypatch, gone_at):
    from cloakbench.bench import executors
    from cloakbench.bench.spec import CompareSpec

    monkeypatch.setattr(executors.Workspace, "open", staticmethod(lambda spec: object()))
    monkeypatch.setattr(executors, "_worker_setup", lambda spec, threads: None)
    connection = GoneDriver()
    if gone_at == "recv":  # the ready message goes through, then the driver dies
        sent = []
        connection.send = sent.append
    # It returns (raising nothing: no BrokenPipeError or EOFError traceback in the worker's log).
    assert executors._pool_worker_main(connection, CompareSpec().to_dict(), 1, "local-0") is None
    if gone_at == "recv":
        assert sent and sent[0][0] == "ready", "the worker said it was ready before its driver went away"


def test_an_orphaned_worker_exits_when_its_driver_is_killed(tmp_path):
    """A driver SIGKILLed (here: os._exit, which runs no cleanup) leaves its worker orphaned; the
    worker's watch thread notices its parent is gone and exits, silently."""
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "driver.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "def child(driver):\n"
        "    from cloakbench.bench.executors import _exit_when_orphaned\n"
        "    _exit_when_orphaned(driver)\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('spawn').Process(target=child, args=(os.getpid(),))\n"
        "    p.start(); print(p.pid, flush=True); time.sleep(0.5); os._exit(0)\n"
    )
    log = tmp_path / "driver.log"
    with open(log, "w") as out:  # a file, not a pipe: the orphan keeps the pipe open until it exits
        subprocess.run([sys.executable, str(script)], stdout=out, stderr=subprocess.STDOUT, timeout=120, env=os.environ)
    child = int(log.read_text().split()[0])
    for _ in range(600):  # the child checks every PARENT_CHECK_S; poll until it is gone (not a timing assertion)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("the orphaned worker did not exit")
    assert "Traceback" not in log.read_text(), log.read_text()


def test_config_comma_list_keys_take_a_string_or_a_list(tmp_path):
    from cloakbench.bench.cli.compare import compare as compare_command
    from cloakbench.bench.cli.options import read_config

    config = tmp_path / "exp.toml"
    config.write_text('[compare]\nattack_models = "toy,toy-b"\nmethods = ["none", "noise"]\nseeds = [0, 1]\n')
    read = read_config(config, "compare", flags=compare_command)
    assert (read["attack_models"], read["methods"], read["seeds"]) == ("toy,toy-b", "none,noise", [0, 1])


def test_a_flow_model_inpaints_with_its_own_transformer_and_is_not_refused():
    """SD 3's inpaint pipeline repaints with the 16-channel transformer by latent blending: toy-flow
    has no inpaint_unet/ folder and still can inpaint; toy-b (ε family, no folder) cannot (#23)."""
    from cloakbench.core.zoo import model_facts

    flow = model_facts("toy-flow")
    assert flow.inpaint_unet is False and flow.can_inpaint is True
    eps = model_facts("toy-b")
    assert eps.inpaint_unet is False and eps.can_inpaint is False


def test_inpaint_on_a_flow_model_computes_its_cell(tmp_path):
    result = run("compare", "--model", "toy-flow", "--quick", "--methods", "none", "--metrics", "psnr",
                 "--attacks", "inpaint", "--images", one_image(tmp_path), "--out", tmp_path / "run",
                 "--no-report", "--threads", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "rows.csv").open()))
    edits = [r for r in rows if r["mimicry"] == "inpaint" and r["metric"] == "psnr"]
    assert edits and all(r["status"] == "ok" and float(r["value"]) > 0 for r in edits), edits
