"""``bench protect``'s first ETA: rates measured earlier, shown before the model has loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench import protect_rates
from cloakbench.bench.cli.app import app


def test_user_rates_win_over_the_shipped_ones_and_keep_the_median_of_the_last_few(tmp_path):
    user, shipped = tmp_path / "mine.json", tmp_path / "shipped.json"
    key = protect_rates.rate_key("sha", "sds-", 1, "cpu", 1, "tiles")
    assert protect_rates.lookup(key, user_file=user, shipped_file=shipped) is None
    shipped.write_text(json.dumps({"schema": 1, "machine": "a 2-core test box", "rates": {key: 4e-6}}))
    rate = protect_rates.lookup(key, user_file=user, shipped_file=shipped)
    assert rate is not None and rate.seconds_per_pixel == 4e-6 and "a 2-core test box" in rate.source
    for value in (1e-6, 2e-6, 9e-6, 3e-6, 5e-6, 7e-6):
        protect_rates.record(key, value, user_file=user)
    kept = json.loads(user.read_text())["rates"][key]
    assert kept == [2e-6, 9e-6, 3e-6, 5e-6, 7e-6]  # the last KEEP, oldest dropped
    rate = protect_rates.lookup(key, user_file=user, shipped_file=shipped)
    assert rate is not None and rate.seconds_per_pixel == 5e-6 and "your last 5 run(s)" in rate.source
    other = protect_rates.rate_key("sha", "sds-", 1, "cpu", 2, "tiles")  # another thread count is another rate
    assert protect_rates.lookup(other, user_file=user, shipped_file=tmp_path / "absent.json") is None


def test_a_rate_file_of_another_schema_is_not_read(tmp_path):
    user = tmp_path / "mine.json"
    key = protect_rates.rate_key("sha", "noise", 1, "cpu", 1, "full")
    user.write_text(json.dumps({"schema": 99, "rates": {key: [1.0]}}))
    assert protect_rates.lookup(key, user_file=user, shipped_file=tmp_path / "absent.json") is None


def test_the_shipped_rates_name_their_machine_and_cover_the_demo_on_toy():
    from cloakbench.core.zoo import model_facts
    from cloakbench.protections import PROTECTIONS, demo_protections

    shipped = json.loads(protect_rates.SHIPPED.read_text())
    assert shipped["schema"] == protect_rates.SCHEMA and "core" in shipped["machine"]
    weights = model_facts("toy").weights_hash
    for method in demo_protections():
        version = PROTECTIONS.get(method).version
        for threads in (1, 2):
            for mode in ("full", "tiles"):
                key = protect_rates.rate_key(weights, method, version, "cpu", threads, mode)
                assert shipped["rates"].get(key, 0) > 0, key


@pytest.fixture()
def picture(tmp_path):
    path = tmp_path / "art" / "cat.png"
    path.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((72, 90, 3)) * 255).astype(np.uint8)).save(path)
    return path


def protect(picture, out):
    args = ["protect", str(picture), "--model", "tiny-random", "--quick", "--threads", "1", "--out", str(out)]
    return CliRunner().invoke(app, args)


def test_the_second_run_estimates_before_loading_and_a_finished_run_never_loads(picture, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOAKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    first = protect(picture, tmp_path / "out1")
    assert first.exit_code == 0, first.output
    assert "estimate before the model has loaded" not in first.output  # no rate of tiny-random anywhere yet
    assert (tmp_path / "cache" / "protect_rates.json").is_file()
    second = protect(picture, tmp_path / "out2")
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())  # the console wraps lines at 80 columns
    assert "estimate before the model has loaded" in said and "your last 1 run(s)" in said

    from cloakbench.core import zoo

    def no_loading(*args, **kwargs):
        raise AssertionError("a run whose pictures are all done loaded the model")

    monkeypatch.setattr(zoo, "load_model", no_loading)
    again = protect(picture, tmp_path / "out2")
    assert again.exit_code == 0, again.output
    assert "already protected" in again.output
