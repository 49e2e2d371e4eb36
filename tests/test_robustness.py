"""Issue #12: every bad input a clear error, nothing published lost (one test per case of its "Why").

Each test drives the CLI as a user would (Typer's runner, in process) and checks the exit
status and the one sentence: it names the file or setting and says what to do, and no
traceback reaches the user unless ``bench --debug``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.bench.cli.options import FILE_KEYS
from cloakbench.core.io import write_atomic


def run(*args) -> CliRunner.invoke:
    return CliRunner().invoke(app, [str(a) for a in args])


def picture(path: Path, height: int = 40, width: int = 48, seed: int = 0, mode: str = "RGB", **save) -> Path:
    rng = np.random.default_rng(seed)
    array = (rng.random((height, width, 4 if mode == "RGBA" else 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **save)
    return path


def assert_sentence(result, code: int, *words: str) -> None:
    """Exit ``code``, every word in the output, and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    flat = " ".join(result.output.split())  # the console wraps long lines
    for word in words:
        assert word in flat or word in result.output.replace("\n", ""), (word, result.output)


# -- bench protect publishes the whole picture and says what intake did ---------------------------
def test_protect_keeps_the_size_and_the_sidecar_records_intake(tmp_path):
    rotated = tmp_path / "art" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": a 40x48 file shows as 48x40
    picture(rotated, exif=exif.tobytes(), quality=95)
    picture(tmp_path / "art" / "alpha.png", 36, 52, seed=1, mode="RGBA")
    deep = (np.random.default_rng(2).random((44, 60)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "art" / "deep.png")  # 16-bit grayscale
    result = run(
        "protect", "--images", tmp_path / "art", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "out"
    )
    assert result.exit_code == 0, result.output
    rotated_record = json.loads((tmp_path / "out" / "none" / "rotated.jpg.json").read_text())
    assert Image.open(tmp_path / "out" / "none" / "rotated.jpg.png").size == (40, 48)
    assert rotated_record["intake"]["original_size"] == [48, 40]
    assert any("EXIF orientation 6" in note for note in rotated_record["intake"]["notes"])
    alpha_record = json.loads((tmp_path / "out" / "none" / "alpha.png.json").read_text())
    assert Image.open(tmp_path / "out" / "none" / "alpha.png.png").size == (52, 36)
    assert alpha_record["intake"]["mode"] == "RGBA" and alpha_record["intake"]["resized"] is None
    assert any("alpha" in note for note in alpha_record["intake"]["notes"])
    deep_record = json.loads((tmp_path / "out" / "none" / "deep.png.json").read_text())
    assert deep_record["intake"]["mode"].startswith("I") and deep_record["size"] == [60, 44]
    assert any("16-bit" in note for note in deep_record["intake"]["notes"])


# -- names never collide ------------------------------------------------------------------------
def test_same_stem_different_extension_both_survive(tmp_path):
    picture(tmp_path / "art" / "a.png", seed=1)
    picture(tmp_path / "art" / "a.jpg", seed=2, quality=95)
    result = run(
        "protect", "--images", tmp_path / "art", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "out"
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out" / "none").iterdir())
    assert written == ["a.jpg.json", "a.jpg.png", "a.png.json", "a.png.png"]
    assert json.loads((tmp_path / "out" / "none" / "a.jpg.json").read_text())["source"].endswith("a.jpg")


def test_two_inputs_that_would_share_an_output_are_refused_naming_both(tmp_path):
    first, second = picture(tmp_path / "one" / "a.png", seed=1), picture(tmp_path / "two" / "a.png", seed=2)
    result = run(
        "protect",
        "--images",
        tmp_path / "one",
        "--images",
        tmp_path / "two",
        "--method",
        "none",
        "--model",
        "tiny-random",
        "--out",
        tmp_path / "out",
    )
    assert_sentence(result, 2, str(first), str(second))
    assert not (tmp_path / "out").exists()


# -- settings: non-finite and out-of-range values refused; the sidecar is strict JSON -------------
@pytest.mark.parametrize(
    "args,named",
    [
        (["--eps", "nan"], "sds-.eps"),
        (["--eps", "inf"], "sds-.eps"),
        (["--eps", "300"], "sds-.eps"),
        (["--eps", "0"], "sds-.eps"),
        (["--steps", "0"], "sds-.steps"),
        (["--set", "sds-.alpha=-1"], "sds-.alpha"),
        (["--set", "sds-.alpha=nan"], "sds-.alpha"),
        (["--method", "noise", "--set", "noise.eps=-inf"], "noise.eps"),
        (["--seed", str(2**64)], "--seed"),
        (["--max-pixels", "0"], "--max-pixels"),
    ],
)
def test_bad_setting_values_are_refused_before_any_work(tmp_path, args, named):
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--model", "tiny-random", "--out", tmp_path / "out", *args)
    assert_sentence(result, 2, named)
    assert not (tmp_path / "out").exists()


def test_a_config_built_in_code_is_held_to_its_ranges_too():
    from cloakbench.core.config import ConfigError
    from cloakbench.protections.engine import PGDConfig

    for bad in ({"eps": float("nan")}, {"steps": 0}, {"alpha": float("inf")}):
        with pytest.raises(ConfigError, match="|".join(bad)):
            PGDConfig(**bad)


def test_the_sidecar_is_strict_json_even_when_a_loss_is_not_finite(tmp_path, monkeypatch):
    from cloakbench.protections import engine

    real_step = engine.PGDProtection.step

    def nan_loss(self, state):
        real_step(self, state)
        state.trace[-1] = torch.full_like(state.trace[-1], float("nan"))
        return state.trace[-1]

    monkeypatch.setattr(engine.PGDProtection, "step", nan_loss)
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--model", "tiny-random", "--quick", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise AssertionError(f"sidecar holds {constant}, which is not JSON")

    record = json.loads((tmp_path / "out" / "sds-" / "a.png.json").read_text(), parse_constant=refuse)
    assert record["loss_last"] is None and record["linf_255"] <= record["eps_255"]


# -- the --config file: unknown keys and sections refused with did-you-mean ----------------------
@pytest.mark.parametrize(
    "text,words",
    [
        ("[compare]\nmethod = 'sds-'\n", ["exp.toml", "unknown key 'method'", "did you mean 'methods'"]),
        ("[compair]\nmethods = 'sds-'\n", ["exp.toml", "unknown section 'compair'", "did you mean 'compare'"]),
        ("seeed = 3\n", ["exp.toml", "unknown key 'seeed'", "did you mean 'seed'"]),
        ("[compare]\ncell_timeout = 0\n", ["--cell-timeout"]),
    ],
)
def test_config_file_mistakes_are_refused_naming_the_file(tmp_path, text, words):
    config = tmp_path / "exp.toml"
    config.write_text(text)
    result = run("compare", "--config", config, "--model", "tiny-random", "--out", tmp_path / "run")
    assert_sentence(result, 2, *words)
    assert not (tmp_path / "run").exists()


def test_file_keys_are_exactly_the_keys_compare_reads():
    """FILE_KEYS must follow bench/cli/compare.py: a key it reads but FILE_KEYS lacks would be refused."""
    source = (Path(__file__).parents[1] / "bench" / "cli" / "compare.py").read_text()
    read = set(re.findall(r'file\.get\("(\w+)"', source)) | set(re.findall(r'pick\([^()]*?, file, "(\w+)"', source))
    assert read and read <= FILE_KEYS["compare"], sorted(read - FILE_KEYS["compare"])


# -- exit codes: a failed cell is 1, --cell-timeout validated -------------------------------------
def test_a_run_whose_cells_fail_exits_1_and_names_them(tmp_path, monkeypatch):
    from cloakbench.protections.noise import UniformNoise

    def broken(self, images, model, *, generator):
        raise RuntimeError("deliberately broken for this test")

    monkeypatch.setattr(UniformNoise, "__call__", broken)
    picture(tmp_path / "art" / "a.png", 64, 64)
    result = run(
        "compare",
        "--images",
        tmp_path / "art",
        "--methods",
        "noise",
        "--attacks",
        "jpeg",
        "--metrics",
        "psnr",
        "--model",
        "tiny-random",
        "--no-report",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 1, result.output
    assert "deliberately broken" in result.output and "failed" in result.output
    assert (tmp_path / "run" / "rows.csv").is_file()  # the rows are kept


def test_a_run_where_every_cell_is_done_exits_0(tmp_path):
    picture(tmp_path / "art" / "a.png", 64, 64)
    result = run(
        "compare",
        "--images",
        tmp_path / "art",
        "--methods",
        "noise",
        "--attacks",
        "jpeg",
        "--metrics",
        "psnr",
        "--model",
        "tiny-random",
        "--no-report",
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_cell_timeout_is_validated(tmp_path, value):
    result = run("compare", "--cell-timeout", value, "--model", "tiny-random", "--out", tmp_path / "run")
    assert_sentence(result, 2, "--cell-timeout")
    assert not (tmp_path / "run").exists()


def test_exit_codes_are_documented_in_help():
    for args in (["--help"], ["compare", "--help"]):
        result = run(*args)
        text = " ".join(result.output.split())
        assert result.exit_code == 0 and "Exit status" in text and "2" in text and "1" in text, text


# -- a sentence, not a traceback ------------------------------------------------------------------
def test_a_damaged_journal_is_named_with_what_to_do(tmp_path):
    picture(tmp_path / "art" / "a.png", 64, 64)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "journal.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    args = [
        "compare",
        "--images",
        tmp_path / "art",
        "--methods",
        "none",
        "--attacks",
        "jpeg",
        "--metrics",
        "psnr",
        "--model",
        "tiny-random",
        "--no-report",
        "--out",
        tmp_path / "run",
    ]
    result = run(*args)
    assert_sentence(result, 2, "journal.sqlite", "damaged", "move it aside")
    debug = run("--debug", *args)  # --debug: the traceback, for a bug report
    assert debug.exit_code != 0 and debug.exception is not None


def test_a_damaged_manifest_is_named(tmp_path):
    picture(tmp_path / "art" / "a.png", 64, 64)
    args = [
        "compare",
        "--images",
        tmp_path / "art",
        "--methods",
        "none",
        "--attacks",
        "jpeg",
        "--metrics",
        "psnr",
        "--model",
        "tiny-random",
        "--no-report",
        "--out",
        tmp_path / "run",
    ]
    assert run(*args).exit_code == 0
    (tmp_path / "run" / "manifest.json").write_text('{"plan": ')
    assert_sentence(run(*args), 2, str(tmp_path / "run" / "manifest.json"), "damaged")


def test_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    from cloakbench.core import images, io

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    # Every file goes through core.io.write_atomic (bench protect's output and sidecar, save_png).
    monkeypatch.setattr(io, "write_atomic", full)
    monkeypatch.setattr(images, "write_atomic", full)
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "o")
    assert_sentence(result, 2, "disk is full", "a.png.png", "rerun")


def test_a_read_only_disk_is_one_sentence(tmp_path, monkeypatch):
    from cloakbench.core import images, io

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(io, "write_atomic", read_only)
    monkeypatch.setattr(images, "write_atomic", read_only)
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "o")
    assert_sentence(result, 2, "Read-only file system", "a.png.png")


def test_out_of_memory_says_what_to_lower(tmp_path, monkeypatch):
    from cloakbench.bench import fullsize

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fullsize, "protect_full_size", exhausted)
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "o")
    assert_sentence(result, 2, "out of memory", "--max-pixels")


def test_a_missing_cuda_device_is_one_sentence(tmp_path):
    picture(tmp_path / "a.png")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = run(
        "protect", tmp_path / "a.png", "--model", "tiny-random", "--device", f"cuda:{count}", "--out", tmp_path / "o"
    )
    assert_sentence(result, 2, f"cuda:{count}")
    assert_sentence(
        run("protect", tmp_path / "a.png", "--model", "tiny-random", "--device", "gpu", "--out", tmp_path / "o"),
        2,
        "'gpu'",
    )
    compare = run(
        "compare",
        "--images",
        tmp_path / "a.png",
        "--model",
        "tiny-random",
        "--device",
        f"cuda:{count}",
        "--out",
        tmp_path / "run",
    )
    assert_sentence(compare, 2, f"cuda:{count}")
    assert not (tmp_path / "run").exists()  # refused before any cell ran


def test_out_that_is_a_file_is_one_sentence(tmp_path):
    picture(tmp_path / "art" / "a.png", 64, 64)
    (tmp_path / "taken").write_text("not a folder")
    assert_sentence(
        run("protect", tmp_path / "art", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "taken"),
        2,
        "--out",
        "is a file",
    )
    assert_sentence(
        run(
            "compare",
            "--images",
            tmp_path / "art",
            "--methods",
            "none",
            "--attacks",
            "jpeg",
            "--metrics",
            "psnr",
            "--model",
            "tiny-random",
            "--out",
            tmp_path / "taken",
        ),
        2,
        "--out",
        "is a file",
    )


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, tiny_model):
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("models") / "tiny-saved")


def test_a_truncated_safetensors_file_is_named(saved_tiny, tmp_path):
    broken = Path(shutil.copytree(saved_tiny, tmp_path / "truncated"))
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--model", broken, "--out", tmp_path / "o")
    assert_sentence(result, 2, str(weights), "damaged or incomplete")


def test_a_broken_config_json_is_named(saved_tiny, tmp_path):
    broken = Path(shutil.copytree(saved_tiny, tmp_path / "badconfig"))
    (broken / "vae" / "config.json").write_text('{"in_channels": 3,')
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--model", broken, "--out", tmp_path / "o")
    assert_sentence(result, 2, str(broken / "vae" / "config.json"))


def test_a_pickle_blocked_by_weights_only_is_one_sentence(saved_tiny, tmp_path):
    hostile = Path(shutil.copytree(saved_tiny, tmp_path / "hostile"))
    (hostile / "vae" / "diffusion_pytorch_model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"weight": Payload()}, hostile / "vae" / "diffusion_pytorch_model.bin")
    picture(tmp_path / "a.png")
    result = run("protect", tmp_path / "a.png", "--model", hostile, "--allow-pickle", "--out", tmp_path / "o")
    assert_sentence(result, 2, str(hostile / "vae" / "diffusion_pytorch_model.bin"), "weights_only=True")
    assert "this must never run" not in result.output


# -- file modes follow the umask ------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "x.json", b"{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == mode


def test_protect_outputs_are_readable_by_the_team(tmp_path):
    picture(tmp_path / "a.png")
    previous = os.umask(0o002)
    try:
        result = run(
            "protect", tmp_path / "a.png", "--method", "none", "--model", "tiny-random", "--out", tmp_path / "o"
        )
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "o" / "none").iterdir():
        assert path.stat().st_mode & 0o777 == 0o664, path
