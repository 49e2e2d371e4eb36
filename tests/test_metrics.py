"""Metrics against independent references (scikit-image, the libraries' own entry points).

Pretrained weights are never available here: LPIPS, FID/KID and CLIP are exercised with
seeded random checkpoints of the right architectures written into temporary caches and
loaded through the real code path (cloakbench.core.weights). Their numbers are meaningless; what is
tested is the plumbing: value range conventions, identities, and "unavailable, never a number".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cloakbench.core import weights
from cloakbench.metrics import METRICS, MetricUnavailable
from tests.test_weights import alexnet_checkpoint, caches, install, write_hf_snapshot  # noqa: F401  (fixtures)


@pytest.fixture()
def pair():
    """Two seeded, smooth 3x48x48 image batches (N=3) in [0, 1], on the 8-bit grid like saved PNGs."""
    generator = torch.Generator().manual_seed(7)
    coarse = torch.rand(3, 3, 6, 6, generator=generator)
    clean = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bilinear", align_corners=False)
    noise = (torch.rand(clean.shape, generator=generator) - 0.5) * 0.1
    other = (clean + noise).clamp(0, 1)
    return (clean * 255).round() / 255, (other * 255).round() / 255


def metric(name: str, **overrides):
    cls = METRICS.get(name)
    return cls.from_overrides(overrides) if overrides else cls()


def test_every_metric_declares_its_semantics(caches):
    from cloakbench.metrics.base import KINDS

    first_need = {"pair": "reference image", "set": "reference image set", "subject": "the subject's clean photos"}
    for name, cls in METRICS.items():
        assert isinstance(cls.higher_is_better, bool), name
        assert cls.scope in KINDS, name
        assert cls.kind() in ("full-reference", "distribution", "no-reference", "identity"), name
        # needs = (the reference, if any, then each pretrained file the user must supply), checked
        # against the weight specs that name this metric and against its availability with empty caches.
        references = 1 if cls.scope in first_need else 0
        if references:
            assert cls.needs[0] == first_need[cls.scope], name
        declared = " ".join(cls.needs[references:]).lower()
        named = [s for s in weights.ALL_SPECS if name in {user.split()[0] for user in s.used_by}]
        shipped = (weights.LPIPS_PACKAGE, weights.PACKAGE)  # files inside installed packages
        specs = [s for s in named if s.folder not in shipped]
        assert bool(declared) == bool(named), f"{name}: needs {cls.needs}"
        for spec in named:
            if spec.folder != weights.LPIPS_PACKAGE:
                assert spec.name.split("-")[0] in declared, f"{name}: needs {cls.needs} do not name {spec.name}"
        ready, reason = cls().availability()
        assert ready == (not specs), f"{name}: availability {reason!r} with no weights anywhere"
        assert ready or any(spec.filename in reason for spec in specs), f"{name}: {reason}"
        assert cls.description(), name
    assert {"lpips", "fid", "kid", "clip-sim", "linf", "l2"} <= set(METRICS.names())
    assert METRICS.get("linf").budget_only and METRICS.get("l2").budget_only
    assert METRICS.get("linf").unit == "/255" == METRICS.get("l2").unit
    assert METRICS.get("fid").scope == "set" == METRICS.get("kid").scope


def test_psnr_matches_skimage(pair):
    outputs, references = pair
    values = metric("psnr")(outputs, references)
    for i in range(len(outputs)):
        expected = peak_signal_noise_ratio(
            references[i].numpy().astype(np.float64), outputs[i].numpy().astype(np.float64), data_range=1.0
        )
        assert values[i].item() == pytest.approx(expected, rel=1e-5)


def _skimage_ssim(output: torch.Tensor, reference: torch.Tensor) -> float:
    return structural_similarity(
        reference.numpy().astype(np.float64),
        output.numpy().astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0,
    )


def test_ssim_matches_skimage(pair):
    outputs, references = pair
    values = metric("ssim")(outputs, references)
    for i in range(len(outputs)):
        assert values[i].item() == pytest.approx(_skimage_ssim(outputs[i], references[i]), abs=1e-5)


def test_ssim_map_cropped_to_valid_windows_is_skimage(pair):
    """Pins the cause of the difference above: the same torchmetrics map, border cropped, is skimage's number."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    outputs, references = pair
    _, full = structural_similarity_index_measure(
        outputs.double(),
        references.double(),
        gaussian_kernel=True,
        kernel_size=11,
        sigma=1.5,
        data_range=1.0,
        reduction="none",
        return_full_image=True,
    )
    cropped = full[..., 5:-5, 5:-5].flatten(1).mean(1)
    for i in range(len(outputs)):
        assert cropped[i].item() == pytest.approx(_skimage_ssim(outputs[i], references[i]), abs=1e-9)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 37, 90), (1, 3, 12, 12)])
def test_ssim_separable_window_is_torchmetrics_2d_window(shape):
    """The registry's two 1-D passes give torchmetrics' 2-D Gaussian SSIM map (border cropped) to float64 rounding.

    Both before the float32 the metric returns (so a wrong weight, a dropped clamp or a
    misaligned shift fails at 1e-12, not only at float32's 1e-7).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    from cloakbench.metrics import fidelity

    generator = torch.Generator().manual_seed(7)
    references = torch.rand(shape, generator=generator, dtype=torch.float64)
    outputs = (references + 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    outputs[..., :6, :6] = references[..., :6, :6] = 0.5  # a flat patch: the variance clamp matters there
    _, full = structural_similarity_index_measure(
        outputs, references, gaussian_kernel=True, kernel_size=11, sigma=1.5, data_range=1.0,
        reduction="none", return_full_image=True,
    )  # fmt: skip
    expected = full[..., 5:-5, 5:-5].flatten(1).mean(1)
    window = fidelity.gaussian_window()
    x, y = outputs, references
    means = [fidelity.gaussian_filter_valid(v, window) for v in (x, y, x * x, y * y, x * y)]
    assert means[0].shape[-2:] == (shape[-2] - 10, shape[-1] - 10)
    value = metric("ssim")(outputs, references)
    assert torch.allclose(value.double(), expected, rtol=0, atol=1e-7)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = means
    ssim_map = ((2 * mean_x * mean_y + 1e-4) * (2 * (mean_xy - mean_x * mean_y) + 9e-4)) / (
        (mean_x**2 + mean_y**2 + 1e-4)
        * ((mean_xx - mean_x**2).clamp(min=0) + (mean_yy - mean_y**2).clamp(min=0) + 9e-4)
    )
    assert torch.allclose(ssim_map.flatten(1).mean(1), expected, rtol=0, atol=1e-12)


def test_budget_metrics_in_255_units(pair):
    clean, _ = pair
    generator = torch.Generator().manual_seed(1)
    sign = torch.randint(0, 2, clean.shape, generator=generator).float() * 2 - 1
    protected = (clean + 6 / 255 * sign).clamp(0, 1)
    linf = metric("linf")(protected, clean)
    l2 = metric("l2")(protected, clean)
    difference = (protected - clean).double().numpy() * 255
    for i in range(len(clean)):
        assert linf[i].item() == pytest.approx(np.abs(difference[i]).max(), abs=1e-4)
        assert l2[i].item() == pytest.approx(np.sqrt((difference[i] ** 2).sum()), rel=1e-5)
    assert linf.max().item() == pytest.approx(6.0, abs=1e-4)


def test_identical_images_give_each_metrics_extreme(pair):
    clean, _ = pair
    assert torch.isinf(metric("psnr")(clean, clean)).all()
    assert torch.allclose(metric("ssim")(clean, clean), torch.ones(len(clean)))
    assert (metric("linf")(clean, clean) == 0).all() and (metric("l2")(clean, clean) == 0).all()
    big = torch.nn.functional.interpolate(clean, size=(176, 176), mode="bilinear", align_corners=False)
    assert torch.allclose(metric("ms-ssim")(big, big), torch.ones(len(clean)), atol=1e-6)


@pytest.mark.parametrize(
    "side",
    [
        64,
        168,
    ],
)
def test_ms_ssim_too_small_is_unavailable_not_an_error(side):
    images = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MetricUnavailable, match="at least"):
        metric("ms-ssim")(images, images)


def test_shape_mismatch_is_refused(pair):
    clean, other = pair
    with pytest.raises(ValueError, match="same shape"):
        metric("linf")(clean, other[:2])


# -- LPIPS -------------------------------------------------------------------------------
def test_lpips_unavailable_without_backbone(caches):
    lpips_metric = metric("lpips")
    ready, reason = lpips_metric.availability()
    assert not ready and "alexnet-owt-7be5be79.pth" in reason and "checkpoints" in reason
    with pytest.raises(MetricUnavailable, match="alexnet-owt-7be5be79.pth"):
        lpips_metric(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    vgg_reason = metric("lpips", net="vgg").availability()[1]
    assert "vgg16-397923af.pth" in vgg_reason


def test_lpips_takes_inputs_in_minus_one_one(caches, alexnet_checkpoint, pair):
    install(alexnet_checkpoint[0], weights.torch_hub_checkpoints())
    lpips_metric = metric("lpips")
    assert lpips_metric.availability() == (True, "ready")
    clean, other = pair
    values = lpips_metric(other, clean)
    # lpips' own [0, 1] entry point (normalize=True) is the independent reference for the range mapping.
    network = lpips_metric.network(clean.device)  # the same lpips.LPIPS, called through its own entry point
    with torch.no_grad():
        expected = network(other, clean, normalize=True).flatten()
        unscaled = network(other, clean).flatten()
    assert torch.allclose(values, expected, atol=1e-6)
    assert not torch.allclose(values, unscaled, atol=1e-6)
    assert (lpips_metric(clean, clean) == 0).all()
    assert (values >= 0).all()


# -- CLIP --------------------------------------------------------------------------------
def test_clip_unavailable_without_weights(caches):
    ready, reason = metric("clip-sim").availability()
    assert not ready and "openai/clip-vit-base-patch32" in reason and "model.safetensors" in reason


def test_clip_similarity_is_the_cosine_of_processor_embeddings(caches):
    from PIL import Image

    write_hf_snapshot(weights.CLIP.repo_id)
    clip = metric("clip-sim")
    generator = torch.Generator().manual_seed(2)
    images = (torch.rand(2, 3, 32, 32, generator=generator) * 255).round() / 255
    others = images.flip(-1)
    values = clip(images, others)
    assert values.shape == (2,) and (values.abs() <= 1 + 1e-5).all()
    assert torch.allclose(clip(images, images), torch.ones(2), atol=1e-5)
    assert torch.allclose(values, clip(others, images), atol=1e-6)
    # Independent path: 8-bit PIL images through the processor's default rescaling.
    model, processor = weights.build_clip()
    pil = [Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for image in images]
    with torch.no_grad():
        features = model.get_image_features(**processor(images=pil, return_tensors="pt"))
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    assert torch.allclose(clip.embed(images), torch.nn.functional.normalize(features, dim=-1), atol=1e-4)


# -- FID / KID ---------------------------------------------------------------------------
def _random_inception_state(seed: int, calibrate: bool = False) -> dict:
    """torch-fidelity's Inception with seeded random weights; with ``calibrate`` its BatchNorm statistics
    are set from random images so features are O(1) rather than vanishing (~10 s on this CPU)."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    torch.manual_seed(seed)
    # The class insists on loading weights in __init__; hand it nothing to build the bare architecture.
    with (
        mock.patch.object(fidelity, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None),
    ):
        network = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    if not calibrate:
        return network.state_dict()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    network.train()
    with torch.no_grad():
        network(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    return network.state_dict()


@pytest.fixture(scope="session")
def inception_checkpoint(tmp_path_factory) -> Path:
    pytest.importorskip("torch_fidelity")
    path = tmp_path_factory.mktemp("inception") / weights.INCEPTION.filename
    torch.save(_random_inception_state(0), path)
    return path


def test_fid_kid_unavailable_without_weights(caches):
    for name in ("fid", "kid"):
        ready, reason = metric(name).availability()
        assert not ready and "weights-inception-2015-12-05-6726825d.pth" in reason


def test_inception_loads_the_file_on_disk(caches, inception_checkpoint):
    install(inception_checkpoint, weights.torch_hub_checkpoints())
    assert metric("fid").availability() == (True, "ready")
    network = weights.build_inception()
    saved = torch.load(inception_checkpoint, weights_only=True)
    assert torch.equal(network.Conv2d_1a_3x3.conv.weight, saved["Conv2d_1a_3x3.conv.weight"])
    assert network.num_features == 2048


@pytest.mark.slow
def test_fid_and_kid_against_the_formula(caches):
    from scipy import linalg

    pytest.importorskip("torch_fidelity")
    folder = weights.torch_hub_checkpoints()
    folder.mkdir(parents=True)
    torch.save(_random_inception_state(0, calibrate=True), folder / weights.INCEPTION.filename)
    generator = torch.Generator().manual_seed(5)
    generated = torch.rand(4, 3, 32, 32, generator=generator)
    concept = torch.rand(4, 3, 32, 32, generator=generator) ** 2
    # 64 features keep the 2048x2048 covariance algebra out of a CPU test; the code path is the same.
    fid = metric("fid", features="64")
    value = fid(generated, concept).item()
    network = weights.build_inception(features=64)
    with torch.no_grad():
        a = network((generated * 255).round().to(torch.uint8)).double().numpy()
        b = network((concept * 255).round().to(torch.uint8)).double().numpy()
    assert a.std(axis=0).mean() > 1e-3  # the calibrated random network gives non-degenerate features
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert value == pytest.approx(expected, rel=0.05, abs=1e-3)
    assert abs(fid(concept, concept).item()) < 1e-2 * max(value, 1.0)
    kid = metric("kid", subsets="5", features="64")
    assert kid(generated, concept).item() > kid(concept, concept).item()
    assert math.isfinite(kid(generated, concept).item())
