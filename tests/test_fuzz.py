"""Property-based tests (Hypothesis): settings values, damaged image bytes, TOML files (``--config``
and ``prompts.toml``, any TOML type for every key) and manifests never give a traceback, and
nothing ``bench protect`` writes is outside the budget.

The default run keeps each property to a few examples (seconds); ``pytest -m fuzz`` runs the
same properties with many more (the ``fuzz`` profile below).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.bench.cli.options import FILE_KEYS
from cloakbench.core.config import ConfigError, apply_overrides, setting_range
from cloakbench.core.images import MIN_SIDE, load_images
from cloakbench.protections import PROTECTIONS

# The default run is derandomized (the same few examples every time: a stable suite); the
# long profile draws fresh examples on every run.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
QUICK = settings(max_examples=12, derandomize=True, **_COMMON)
LONG = settings(max_examples=300, **_COMMON)
QUICK_CLI = settings(max_examples=3, derandomize=True, **_COMMON)
LONG_CLI = settings(max_examples=40, **_COMMON)


def valid_file(kind: str, seed: int = 0, exif: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(coarse).resize((70, 50), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    options = {"quality": 90} if kind == "JPEG" else {}
    if exif:  # an orientation tag: bit flips then land in the EXIF parser too
        tags = Image.Exif()
        tags[0x0112] = 6
        options["exif"] = tags.tobytes()
    image.save(buffer, format=kind, **options)
    return buffer.getvalue()


FILES = {"PNG": valid_file("PNG"), "JPEG": valid_file("JPEG"), "EXIF.JPEG": valid_file("JPEG", exif=True)}

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "", "abc", "0", "-0", "300", "1e-320"]),
)


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    """A valid PNG or JPEG, truncated and/or with a few bits flipped."""
    kind = draw(st.sampled_from(sorted(FILES)))
    data = bytearray(FILES[kind])
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return kind, bytes(data)


def check_settings(name: str, field: str, text: str) -> None:
    """``--set NAME.FIELD=text`` is refused naming the setting, or accepted finite and in its declared range."""
    try:
        config = apply_overrides(PROTECTIONS.get(name).Config(), {field: text}, owner=name)
    except ConfigError as error:
        assert name in str(error), str(error)
        return
    accepted = getattr(config, field)
    assert isinstance(accepted, (int, float)) and math.isfinite(accepted)
    declared = setting_range(next(f for f in dataclasses.fields(config) if f.name == field))
    assert declared is not None, f"{name}.{field} accepted {text!r} but declares no range"
    declared.check(accepted, field)  # would raise if an accepted value lay outside its range


def _settings_property(profile):
    @profile
    @given(
        name=st.sampled_from(["sds-", "advdm", "noise", "photoguard"]),
        field=st.sampled_from(["eps", "alpha", "steps"]),
        value=numbers,
    )
    def prop(name, field, value):
        if field in {f.name for f in dataclasses.fields(PROTECTIONS.get(name).Config)}:
            check_settings(name, field, str(value))

    return prop


def _intake_property(profile):
    @profile
    @example(case=("JPEG", FILES["JPEG"]))
    @given(case=damaged())
    def prop(tmp_path_factory, case):
        kind, data = case
        folder = tmp_path_factory.mktemp("fuzz")
        path = folder / f"x.{kind.lower()}"
        path.write_bytes(data)
        intake = load_images([str(path)], 64, keep_size=True)  # never raises: a bad file is skipped
        assert len(intake.images) + len(intake.skipped) == 1
        for image in intake.images:
            assert image.pixels.shape[0] == 3 and min(image.pixels.shape[-2:]) >= MIN_SIDE
            assert float(image.pixels.min()) >= 0 and float(image.pixels.max()) <= 1
        for skipped in intake.skipped:
            assert str(path) in skipped.reason

    return prop


def _protect_property(profile):
    @profile
    @example(case=("PNG", FILES["PNG"]), eps="8")  # intact files: the budget check always runs
    @example(case=("JPEG", FILES["JPEG"]), eps="0.5")
    @given(case=damaged(), eps=st.one_of(st.integers(-5, 300).map(str), st.sampled_from(["nan", "inf", "0.5"])))
    def prop(tmp_path_factory, monkeypatch, tiny_model, case, eps):
        from cloakbench.core import zoo as models

        # The model is built once per session: the property is about the bytes and the budget.
        monkeypatch.setattr(models, "load_model", lambda *args, **kwargs: tiny_model)
        kind, data = case
        folder = tmp_path_factory.mktemp("fuzzcli")
        (folder / f"x.{kind.lower()}").write_bytes(data)
        out = folder / "out"
        result = CliRunner().invoke(
            app,
            [
                "protect",
                str(folder / f"x.{kind.lower()}"),
                "--method",
                "noise",
                "--model",
                "tiny-random",
                "--eps",
                eps,
                "--out",
                str(out),
            ],
        )
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 0:
            record = json.loads(
                (out / "noise" / f"x.{kind.lower()}.json").read_text(),
                parse_constant=lambda c: pytest.fail(f"not JSON: {c}"),
            )
            clean = load_images([str(folder / f"x.{kind.lower()}")], 64, keep_size=True).images[0].pixels
            saved = np.asarray(Image.open(out / "noise" / f"x.{kind.lower()}.png").convert("RGB"), dtype=np.int16)
            levels = np.round(clean.permute(1, 2, 0).numpy() * 255).astype(np.int16)
            assert saved.shape == levels.shape
            assert np.abs(saved - levels).max() <= math.floor(float(eps)) == math.floor(record["eps_255"])
        else:
            assert not (out / "noise").exists() or not any((out / "noise").iterdir())

    return prop


# -- TOML files: every key of a --config file and of a prompts.toml, any TOML type ------------------
def toml_value(value) -> str:
    """``value`` written as TOML (the few types the strategies below draw)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of printable text is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters='"\\'), max_size=8)
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.sampled_from(["0,1", "sdedit", "tiny-random", "cpu", "all", "", "none", "0.3", "false"]),
)
toml_values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(text, scalars, max_size=2))


def check_config_file(folder, body: str) -> None:
    """A --config file is refused naming the file, or every value it gives has its flag's declared type."""
    from cloakbench.bench.cli.compare import compare
    from cloakbench.bench.cli.options import check_file_overrides, merged_sweeps, read_config
    from cloakbench.core.config import check_seed

    path = folder / "exp.toml"
    path.write_text(body, encoding="utf-8")
    try:
        config = read_config(path, "compare", flags=compare)
        check_file_overrides(config.get("set") or {}, path)
        merged_sweeps(config, [])
        if "seed" in config:
            check_seed(config["seed"], "--seed")
    except ConfigError as error:
        assert str(path) in str(error) or "--" in str(error), str(error)  # the file, or the flag it stands for
        return
    types = {"quick": bool, "seed": int, "cell_timeout": (int, float), "prompt": str, "model": str, "out": str}
    for key, kind in types.items():
        if key in config:
            assert isinstance(config[key], kind) and not (kind is not bool and isinstance(config[key], bool)), key
    for key in ("methods", "attacks", "metrics", "device", "dtype"):
        assert key not in config or isinstance(config[key], str), key
    assert "images" not in config or all(isinstance(i, str) for i in config["images"])


def _config_property(profile):
    keys = st.sampled_from(sorted(FILE_KEYS["compare"]) + ["seeed", "eps"])
    set_fields = st.sampled_from(["strengths", "steps", "guidance_scale", "latent", "eta", "nope"])

    @profile
    @example(top={"quick": "false"}, section={}, set_table={"strengths": [0.3, 0.3]})
    @example(top={"seed": "abc"}, section={"images": "pix"}, set_table={"steps": True})
    @given(
        top=st.dictionaries(keys, toml_values, max_size=3),
        section=st.dictionaries(keys, toml_values, max_size=3),
        set_table=st.dictionaries(set_fields, toml_values, max_size=2),
    )
    def prop(tmp_path_factory, top, section, set_table):
        top = {k: v for k, v in top.items() if not isinstance(v, dict)}  # a table at the top is a section
        lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
        lines += ["[compare]"] + [f"{k} = {toml_value(v)}" for k, v in section.items()]
        lines += ["[set.sdedit]"] + [f"{k} = {toml_value(v)}" for k, v in set_table.items()]
        check_config_file(tmp_path_factory.mktemp("toml"), "\n".join(lines) + "\n")

    return prop


def _prompts_file_property(profile):
    @profile
    @example(table={"landscpe": "a hill"}, wrapped=True, encoding="utf-8")
    @example(table={"prompts": "a photo"}, wrapped=False, encoding="utf-16")
    @given(
        table=st.dictionaries(st.sampled_from(["cat", "dog", "prompts", "", "cät"]), toml_values, max_size=3),
        wrapped=st.booleans(),
        encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
    )
    def prop(tmp_path_factory, table, wrapped, encoding):
        from cloakbench.core.datasets import DatasetError, load_dataset

        folder = tmp_path_factory.mktemp("prompts")
        (folder / "cat").mkdir()
        (folder / "cat" / "a.png").write_bytes(FILES["PNG"])
        body = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()) + "\n"
        (folder / "prompts.toml").write_text(("[prompts]\n" if wrapped else "") + body, encoding=encoding)
        try:
            dataset = load_dataset([str(folder)], 64)
        except DatasetError as error:
            assert "prompts.toml" in str(error), str(error)
            return
        (image,) = dataset.images
        prompts = table.get("prompts", table) if not wrapped else table
        assert dataset.of(image).prompt == (prompts.get("cat", "") if isinstance(prompts, dict) else "")

    return prop


# -- manifests: any columns, rows, paths and encodings ---------------------------------------------
def _manifest_property(profile):
    cells = st.one_of(
        st.sampled_from(["a.png", "b.png", "missing.png", "sub", "", "../a.png", "a.png ", "mask.png", "big.png"]),
        text,
    )
    columns = st.lists(st.sampled_from(["path", "prompt", "category", "mask", "extra", " path"]), max_size=4)

    @profile
    @example(header=["path", "mask"], rows=[["a.png", "big.png"]], encoding="utf-8")
    @example(header=["path"], rows=[["sub"]], encoding="utf-16")
    @given(header=columns, rows=st.lists(st.lists(cells, max_size=5), max_size=4), encoding=st.sampled_from(
        ["utf-8", "utf-8-sig", "utf-16", "latin-1"]))  # fmt: skip
    def prop(tmp_path_factory, header, rows, encoding):
        import csv

        from cloakbench.core.datasets import DatasetError, load_manifest

        folder = tmp_path_factory.mktemp("manifest")
        (folder / "a.png").write_bytes(FILES["PNG"])
        (folder / "b.png").write_bytes(valid_file("PNG", seed=1))
        Image.new("L", (70, 50), 255).save(folder / "mask.png")
        Image.new("L", (20, 20), 255).save(folder / "big.png")  # a mask of another size
        (folder / "sub").mkdir()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        path = folder / "list.csv"
        try:
            path.write_bytes(buffer.getvalue().encode(encoding))
        except UnicodeEncodeError:
            return  # latin-1 cannot spell the drawn text
        try:
            dataset = load_manifest(path, 64)
        except DatasetError as error:
            assert str(path) in str(error), str(error)
            return
        assert 1 <= len(dataset.images) <= len(rows)
        for image in dataset.images:
            info = dataset.of(image)
            assert info.mask is None or tuple(info.mask.shape) == (1, 64, 64)

    return prop


test_config_files_are_refused_or_typed = _config_property(QUICK)
test_prompts_files_are_refused_or_read = _prompts_file_property(QUICK)
test_manifests_are_refused_naming_the_file_or_read = _manifest_property(QUICK)
test_config_files_long = pytest.mark.fuzz(_config_property(LONG))
test_prompts_files_long = pytest.mark.fuzz(_prompts_file_property(LONG))
test_manifests_long = pytest.mark.fuzz(_manifest_property(LONG))

test_settings_values_are_refused_or_in_range = _settings_property(QUICK)
test_damaged_image_bytes_are_skipped_with_a_reason = _intake_property(QUICK)
test_bench_protect_never_tracebacks_and_never_leaves_the_budget = _protect_property(QUICK_CLI)

test_settings_values_long = pytest.mark.fuzz(_settings_property(LONG))
test_damaged_image_bytes_long = pytest.mark.fuzz(_intake_property(LONG))
test_bench_protect_long = pytest.mark.fuzz(_protect_property(LONG_CLI))
