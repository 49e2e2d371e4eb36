"""Every registered mimicry attack, purification and metric, driven by its registry (CPU, tiny-random).

Each entry runs with its quick settings (``cloakbench.core.quick.quick_component``) and
must keep the contract: attacks return ``(N, 3, H, W)`` float32 in ``[0, 1]`` per setting
(set-scope attacks such as textual inversion a batch of generations), leave their input
alone; metrics return one finite value per pair (or one per pair of sets) and declare
``higher_is_better`` as a bool. An entry that cannot run here by design (pretrained
weights absent: LPIPS's backbone, the FID Inception, CLIP, AlexNet for IMPRESS, the SD x4
upscaler) must say so with its documented error, ``AttackUnavailable`` /
``MetricUnavailable``, whose reason names the missing file — asserted, never skipped.
A new registry entry is picked up by these tests without editing them.
"""

from __future__ import annotations

import pytest
import torch

from cloakbench.core import weights
from cloakbench.core.images import quantize_8bit
from cloakbench.core.quick import quick_component
from cloakbench.metrics import METRICS, MetricUnavailable
from cloakbench.metrics.base import KINDS
from cloakbench.metrics.fidelity import MS_SSIM_MIN_SIDE
from cloakbench.mimicry import MIMICRY, AttackContext, AttackUnavailable
from tests.test_weights import caches  # noqa: F401  (fixture: empty torch hub / HF caches)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def missing_weight_files() -> dict[str, weights.WeightSpec]:
    """``{file name: spec}`` of every pretrained file the benchmark knows of that is absent here."""
    return {spec.filename: spec for spec in weights.ALL_SPECS if weights.find(spec) is None}


def assert_names_a_missing_file(reason: str, owner: str) -> None:
    missing = missing_weight_files()
    named = [name for name in missing if name in reason]
    assert named, (
        f"{owner} is unavailable, but its reason names none of the missing weight files "
        f"{sorted(missing) or '(none is missing here)'}: {reason}"
    )


def smooth_images(count: int, side: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(count, 3, 8, 8, generator=generator(seed))
    return quantize_8bit(
        torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    )


# -- mimicry: attacks and purifications ------------------------------------------------------


def quick_attack(name: str):
    cls = MIMICRY.get(name)
    return cls.from_overrides(quick_component(cls))


def attack_context(tmp_path, images: torch.Tensor, setting: str = "", model=None) -> AttackContext:
    """What the harness hands an attack; with ``model``, the public protections an adaptive stage runs."""
    from cloakbench.bench.copier import RunProtections

    return AttackContext(
        setting=setting,
        prompt="a photo",
        work_dir=str(tmp_path),
        image_names=[f"image{i}" for i in range(len(images))],
        protections=RunProtections(model, quick=True) if model is not None else None,
        cache_dir=str(tmp_path / "stages"),
    )


@pytest.mark.parametrize("name", MIMICRY.names())
def test_attack_contract(name, tiny_model, clean8, tmp_path):
    attack = quick_attack(name)
    assert attack.scope in ("image", "set"), name
    assert isinstance(attack.is_purification, bool) and isinstance(attack.version, int) and attack.version >= 1
    assert attack.description(), name
    settings = attack.settings()
    assert settings and all(isinstance(s, str) for s in settings), settings
    images = clean8.clone()

    try:
        attack.check_available()
    except AttackUnavailable as error:
        assert_names_a_missing_file(str(error), name)
        with pytest.raises(AttackUnavailable) as again:  # the call refuses too: never a made-up output
            attack(images, tiny_model, generator=generator(0), context=attack_context(tmp_path, images))
        assert_names_a_missing_file(str(again.value), name)
        return

    assert isinstance(attack.adaptive, bool) and isinstance(attack.adapts_model, bool), name
    model = tiny_model
    if attack.adapts_model:  # a model stage: the rest of the chain runs with what it returns
        model = attack.adapt_model(
            tiny_model, generator=generator(0), context=attack_context(tmp_path, images, "", tiny_model)
        )
        assert model is not tiny_model and model.resolution == tiny_model.resolution, name
        assert model.weights_hash != tiny_model.weights_hash, f"{name}: a changed model must say so in its weights hash"
    for setting in settings:
        context = attack_context(tmp_path, images, setting, tiny_model)
        out = attack(images, model, generator=generator(0), context=context)
        where = f"{name} (setting {setting!r})"
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32, where
        if attack.scope == "image":
            assert out.shape == images.shape, f"{where}: {tuple(out.shape)}"
        else:  # learns from the set, returns generations at the model's resolution
            expected = getattr(attack.config, "k", None)
            assert out.ndim == 4 and out.shape[1] == 3 and out.shape[0] >= 1, f"{where}: {tuple(out.shape)}"
            assert out.shape[-2:] == (tiny_model.resolution, tiny_model.resolution), where
            if expected is not None:
                assert out.shape[0] == expected, f"{where}: {out.shape[0]} generations, config.k = {expected}"
        assert torch.isfinite(out).all(), where
        assert out.min() >= 0 and out.max() <= 1, f"{where}: range [{out.min():.4g}, {out.max():.4g}]"
        assert out.data_ptr() != images.data_ptr(), f"{where} returned its input tensor"
        assert torch.equal(images, clean8), f"{where} modified its input images"


def test_impress_without_weights_names_vgg16(caches):
    """IMPRESS's LPIPS is VGG in the authors' code (AAAAAAsuka/Impress impress.py:12)."""
    with pytest.raises(AttackUnavailable, match=weights.VGG16.filename) as caught:
        quick_attack("impress").check_available()
    assert "impress.distance=l2" in str(caught.value)  # and says how to run without them


def test_upscale_without_the_sd_x4_upscaler(caches, clean8, tmp_path):
    """No upscaler: ``upscale`` is unavailable naming the files and the place, never bicubic under its name."""
    from cloakbench.mimicry.upscale import SD_UPSCALER_ID, find_cached_upscaler

    assert find_cached_upscaler() is None
    with pytest.raises(AttackUnavailable) as caught:
        quick_attack("upscale")(clean8, None, generator=generator(0), context=attack_context(tmp_path, clean8))
    reason = str(caught.value)
    assert SD_UPSCALER_ID in reason and weights.SD_X4_UPSCALER.filename in reason and "upscale-bicubic" in reason
    context = attack_context(tmp_path, clean8)
    quick_attack("upscale-bicubic")(clean8, None, generator=generator(0), context=context)
    assert context.notes["upscale-bicubic"]["upscaler"] == "bicubic"


# -- metrics ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metric_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two different 8-bit image batches (N=2), as large as the most demanding metric needs (MS-SSIM)."""
    return smooth_images(2, MS_SSIM_MIN_SIDE, seed=1), smooth_images(2, MS_SSIM_MIN_SIDE, seed=2)


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name, metric_pair):
    cls = METRICS.get(name)
    metric = cls.from_overrides(quick_component(cls))
    assert isinstance(cls.higher_is_better, bool), name
    assert cls.scope in KINDS and isinstance(cls.unit, str) and cls.description(), name
    outputs, references = (images.clone() for images in metric_pair)

    ready, reason = metric.availability()
    if cls.scope not in ("pair", "set"):
        # No-reference and identity metrics take other inputs; their values are checked on real
        # photos in tests/test_metrics_noreference.py. Here: ready, or unavailable naming a file.
        if not ready:
            assert_names_a_missing_file(reason, name)
        return
    if not ready:
        assert_names_a_missing_file(reason, name)
        with pytest.raises(MetricUnavailable) as again:  # unavailable, never a number
            metric(outputs, references)
        assert_names_a_missing_file(str(again.value), name)
        return
    assert reason == "ready"

    values = metric(outputs, references)
    assert isinstance(values, torch.Tensor) and values.dtype == torch.float32, name
    expected = (len(outputs),) if cls.scope == "pair" else ()
    assert tuple(values.shape) == expected, f"{name}: shape {tuple(values.shape)}, expected {expected}"
    assert torch.isfinite(values).all(), f"{name}: {values}"
    assert torch.equal(outputs, metric_pair[0]) and torch.equal(references, metric_pair[1]), (
        f"{name} modified its inputs"
    )
