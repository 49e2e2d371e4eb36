"""Property-based tests (Hypothesis): settings values and damaged image bytes never give a traceback,
and nothing ``bench protect`` writes is outside the budget.

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


test_settings_values_are_refused_or_in_range = _settings_property(QUICK)
test_damaged_image_bytes_are_skipped_with_a_reason = _intake_property(QUICK)
test_bench_protect_never_tracebacks_and_never_leaves_the_budget = _protect_property(QUICK_CLI)

test_settings_values_long = pytest.mark.fuzz(_settings_property(LONG))
test_damaged_image_bytes_long = pytest.mark.fuzz(_intake_property(LONG))
test_bench_protect_long = pytest.mark.fuzz(_protect_property(LONG_CLI))
