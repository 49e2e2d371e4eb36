"""Amortized protectors: the generator's budget by construction, the training signal's sign,
resumable training, tiling, which protector a model gets, and the CLI on a saved file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cloakbench.bench.cli.app import app
from cloakbench.core.toy_data import Picture
from cloakbench.protections import PROTECTIONS, ProtectionUnavailable
from cloakbench.protections.amortized import MAX_PIXELS_PER_PASS, _in_tiles, default_protector
from cloakbench.protections.amortized_training import TrainingSettings, generator_gradient, objective_protection
from cloakbench.protections.amortized_training import train_protector as train
from cloakbench.protections.perturbation_generator import (
    WEIGHTS_FILE,
    GeneratorSpec,
    load_generator,
    seeded_generator,
)

SHIPPED = default_protector("toy")


def amortized(**overrides):
    return PROTECTIONS.get("amortized").from_overrides(overrides)


def test_any_weights_stay_inside_the_ball(clean8):
    network = seeded_generator(seed=3)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(50.0)  # wild weights: tanh saturates, the bound still holds
        unit = network(clean8)
    assert unit.abs().max() <= 1.0
    protection = amortized()
    protection._cache[("untrained", "tiny-random", "cpu")] = network  # this test's weights, not the seeded ones
    try:
        protected = protection(clean8, SimpleNamespace(name="tiny-random", device=torch.device("cpu")))
    finally:
        protection._cache.pop(("untrained", "tiny-random", "cpu"))
    assert ((protected - clean8).abs() * 255).round().max() <= 16
    assert ((protected - clean8).abs() * 255).round().max() >= 15  # saturated: it does reach the budget


def test_random_weight_test_models_get_a_labelled_untrained_generator(tiny_model, clean8):
    protection = amortized()
    protection(clean8, tiny_model)
    assert "UNTRAINED" in protection.row_note() and "tiny-random" in protection.row_note()


def test_a_model_without_a_protector_is_unavailable_naming_the_file_and_the_command(tmp_path):
    model = SimpleNamespace(name="toy-b", device=torch.device("cpu"))
    with pytest.raises(ProtectionUnavailable) as raised:
        amortized().check_available(model)
    message = str(raised.value)
    assert str(default_protector("toy-b") / WEIGHTS_FILE) in message
    assert "bench train-protector --objective sds- --model toy-b" in message
    with pytest.raises(ProtectionUnavailable, match=str(tmp_path / "nowhere")):
        amortized(protector=str(tmp_path / "nowhere")).check_available(model)


def test_tiles_give_the_whole_picture_s_perturbation():
    network = seeded_generator(GeneratorSpec((8, 16, 32)), seed=1).eval()
    image = torch.rand(1, 3, 200, 328, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = network(image)
        tiled = _in_tiles(network, image, max_pixels=136 * 136)  # tiles of 136, cores of 8: many seams
    assert MAX_PIXELS_PER_PASS >= 1024 * 1024
    assert torch.allclose(whole, tiled, atol=1e-5), (whole - tiled).abs().max()


@pytest.mark.parametrize("objective", ["sds-", "encoder"])
def test_one_training_step_moves_the_pixels_along_the_objective_s_direction(tiny_model, clean8, objective):
    """The sign convention: after one Adam step the generated pixels move with the protection's own
    direction d (the PGD step would move them by +sign(d)), not against it."""
    protection = objective_protection(objective, 16.0)
    network = seeded_generator(GeneratorSpec((8, 16, 32)), seed=0)
    with torch.no_grad():
        network.head.weight.normal_(std=0.05)  # off the near-zero start, so one step is measurable
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2)
    draws = [torch.Generator().manual_seed(7 + i) for i in range(clean8.shape[0])]
    before = (clean8 + 16 / 255 * network(clean8)).clamp(0, 1)
    gradient, _ = generator_gradient(protection, tiny_model, clean8, before, draws)
    optimizer.zero_grad()
    before.backward(-gradient)
    optimizer.step()
    with torch.no_grad():
        after = (clean8 + 16 / 255 * network(clean8)).clamp(0, 1)
    assert float(((after - before.detach()) * gradient).sum()) > 0


def pictures():
    rng = torch.Generator().manual_seed(0)
    return [Picture(f"p{i}", "", torch.rand(3, 40, 48, generator=rng)) for i in range(2)]


def test_training_is_seeded_and_resumes_to_the_uninterrupted_weights(tiny_model, tmp_path):
    settings = dict(steps=4, batch=1, widths=(4, 8), checkpoint_every=1, objective="encoder")
    train(tiny_model, pictures(), tmp_path / "whole", TrainingSettings(**settings))
    train(tiny_model, pictures(), tmp_path / "parts", TrainingSettings(**{**settings, "steps": 2}))
    record = train(tiny_model, pictures(), tmp_path / "parts", TrainingSettings(**settings))  # resumes at 2
    assert record["trained_steps"] == 4
    whole, parts = load_generator(tmp_path / "whole"), load_generator(tmp_path / "parts")
    for (name, a), (_, b) in zip(whole.state_dict().items(), parts.state_dict().items()):
        assert torch.equal(a, b), name
    untrained = seeded_generator(GeneratorSpec((4, 8)), seed=0)
    assert not torch.equal(untrained.head.weight, whole.head.weight)  # it did learn something
    log = json.loads((tmp_path / "whole" / "train_log.json").read_text())
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]


def test_train_protector_cli_writes_card_and_checksums(tmp_path):
    out = tmp_path / "protector"
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((80, 96, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
    Image.fromarray((rng.random((80, 96, 3)) * 255).astype(np.uint8)).save(folder / "astronaut.png")
    args = ["train-protector", "--objective", "encoder", "--model", "tiny-random", "--images", str(folder)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--steps", "2", "--batch", "1"])
    assert result.exit_code == 0, result.output
    assert "astronaut.png (a held-out evaluation picture)" in result.output
    card = (out / "MODEL_CARD.md").read_text()
    assert "bench train-protector --objective encoder --model tiny-random" in card and "minutes" in card
    sums = dict(line.split("  ")[::-1] for line in (out / "SHA256SUMS").read_text().splitlines())
    from cloakbench.core.provenance import sha256_file

    assert sums == {name: sha256_file(out / name) for name in ("generator.safetensors", "protector.json")}
    assert not (out / "checkpoint").exists()  # finished: the resume state is gone
    wrong = CliRunner().invoke(app, ["train-protector", "--objective", "sds-z", "--model", "tiny-random",
                                     "--images", str(folder), "--out", str(tmp_path / "x"), "--steps", "1"])  # fmt: skip
    assert wrong.exit_code == 2 and "analysis-only" in wrong.output


@pytest.mark.skipif(not (SHIPPED / WEIGHTS_FILE).is_file(), reason="models/protector-toy is not shipped here")
def test_bench_protect_amortized_keeps_the_saved_file_in_budget(tmp_path):
    rng = np.random.default_rng(1)
    source = tmp_path / "art" / "painting.jpg"
    source.parent.mkdir()
    Image.fromarray((rng.random((300, 460, 3)) * 255).astype(np.uint8)).save(source, quality=90)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["protect", "--method", "amortized", "--protector", str(SHIPPED), "--model", "toy"]
        + ["--images", str(source.parent), "--out", str(out), "--max-pixels", "65536"],
    )
    assert result.exit_code == 0, result.output
    saved = np.asarray(Image.open(out / "amortized" / "painting.jpg.png").convert("RGB"), dtype=np.int16)
    clean = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)
    assert saved.shape == clean.shape
    assert np.abs(saved - clean).max() <= 16
    assert np.abs(saved - clean).mean() > 2  # a real perturbation, not the picture back
