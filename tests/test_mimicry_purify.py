"""Purifications: JPEG, blur, noise, noisy upscaling, latent DiffPure, IMPRESS (pixel purifiers: test_mimicry_purify_pixel.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable
from cloakbench.mimicry.diffpure_latent import LatentDiffPure as DiffPure
from cloakbench.mimicry.diffpure_latent import purification_timesteps
from cloakbench.mimicry.filters import JPEG, Blur, GaussianNoise
from cloakbench.mimicry.impress import Impress, consistency_loss
from cloakbench.mimicry.upscale import NoisyBicubicUpscale, NoisyUpscale, build_tiny_upscaler


def call(purifier, images, model=None, seed=0):
    context = AttackContext()
    out = purifier(images, model, generator=torch.Generator().manual_seed(seed), context=context)
    return out, context


def psnr(a, b):
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def photo():
    """A real photograph (skimage's astronaut, shipped in the wheel), area-downsampled to 128², 8-bit."""
    from skimage import data

    pixels = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255.0
    small = torch.nn.functional.interpolate(pixels, size=(128, 128), mode="area")
    return (small * 255).round() / 255


def test_all_purifications_are_registered():
    names = {n for n, c in MIMICRY.items() if c.is_purification}
    assert names == {
        "jpeg",
        "blur",
        "noise",
        "upscale",
        "upscale-stock",
        "upscale-bicubic",
        "diffpure",
        "diffpure-latent",
        "gridpure",
        "pdm-pure",
        "pdm-pure-uncond",
        "impress",
        "encoder-harden",  # a model stage: it hands the chain a hardened encoder (docs/MIMICRY.md)
        "counter-pgd",
    }


def test_jpeg_error_follows_quality(photo):
    scores = {q: psnr(call(JPEG(JPEG.Config(quality=q)), photo)[0], photo) for q in (30, 50, 75, 95, 100)}
    assert scores[30] < scores[50] < scores[75] < scores[95] < scores[100]
    # q=100 still quantises the DCT (step 1) and subsamples chroma 4:2:0, so not lossless,
    # but close: well above the 8-bit-rounding-level ~45 dB region only a lossless codec beats.
    assert scores[100] > 35.0
    # q=75 halves libjpeg's standard tables (luminance steps 5..61 of 255): a visible but
    # moderate loss. Published rate-distortion curves put natural photos around 30–36 dB at
    # this setting; a 4x-downsampled photo is denser in detail, so the band is widened downwards.
    assert 26.0 < scores[75] < 38.0
    out, _ = call(JPEG(), photo)
    assert torch.equal(out * 255, (out * 255).round())  # a decoded 8-bit image


def test_blur_matches_torchvision_and_is_low_pass():
    from torchvision.transforms.functional import gaussian_blur

    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out, context = call(Blur(), noise)
    assert context.notes["blur"]["sigma"] == pytest.approx(1.4)
    torch.testing.assert_close(out, gaussian_blur(noise, [7, 7], [1.4, 1.4]), atol=1e-5, rtol=0)

    def band_energy(x, low, high):
        spectrum = torch.fft.fft2(x - x.mean()).abs() ** 2
        freq = torch.fft.fftfreq(x.shape[-1])
        radius = (freq[:, None] ** 2 + freq[None, :] ** 2).sqrt()
        return float(spectrum[..., (radius >= low) & (radius < high)].sum())

    # A Gaussian with σ = 1.4 passes exp(−2π²σ²f²) of the amplitude: 8.9 % at f = 0.25.
    assert band_energy(out, 0.25, 1.0) < 0.01 * band_energy(noise, 0.25, 1.0)
    assert band_energy(out, 0.0, 0.02) > 0.9 * band_energy(noise, 0.0, 0.02)
    assert abs(float(out.mean() - noise.mean())) < 2e-3


def test_noise_has_the_set_sigma_and_is_seeded():
    grey = torch.full((1, 3, 128, 128), 0.5)
    out, _ = call(GaussianNoise(), grey, seed=1)
    delta = out - grey
    # 49 152 samples: the std estimate's own error is σ/√(2n) ≈ 0.00016.
    assert abs(float(delta.std()) - 0.05) < 0.001
    assert abs(float(delta.mean())) < 0.001
    assert torch.equal(out, call(GaussianNoise(), grey, seed=1)[0])
    assert not torch.equal(out, call(GaussianNoise(), grey, seed=2)[0])
    white, _ = call(GaussianNoise(GaussianNoise.Config(sigma=0.2)), torch.ones(1, 3, 16, 16))
    assert float(white.max()) == 1.0 and float(white.min()) >= 0.0


def test_upscale_bicubic(images):
    purifier = NoisyBicubicUpscale()
    out, context = call(purifier, images, seed=3)
    assert context.notes["upscale-bicubic"]["upscaler"] == "bicubic"
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, call(purifier, images, seed=3)[0])
    # The ¼ bottleneck removes detail the noise alone would not: the result is smoother than the input noise.
    noisy = images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(3))
    assert float((out - images).abs().mean()) < float((noisy.clamp(0, 1) - images).abs().mean())
    with pytest.raises(ValueError, match="divisible by 4"):
        call(purifier, images[..., :62])


def test_upscale_without_an_upscaler_is_unavailable_never_bicubic(tmp_path, monkeypatch, images):
    """No upscaler: ``upscale`` refuses, naming the files and the place; it never runs bicubic under its name."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("CLOAKBENCH_SD_X4_UPSCALER", raising=False)
    with pytest.raises(AttackUnavailable) as caught:
        NoisyUpscale().check_available()
    reason = str(caught.value)
    assert "stabilityai/stable-diffusion-x4-upscaler" in reason and "unet/diffusion_pytorch_model.safetensors" in reason
    assert str(tmp_path / "hub") in reason and "upscale-bicubic" in reason
    with pytest.raises(AttackUnavailable):
        call(NoisyUpscale(), images)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AttackUnavailable, match="empty"):
        call(NoisyUpscale(NoisyUpscale.Config(upscaler_path=str(empty))), images)


def test_upscale_with_a_local_x4_upscaler(tmp_path, images):
    """A saved SD-x4-shaped folder loads offline with safetensors; Hönig et al.'s recipe runs on the full image."""
    folder = tmp_path / "upscaler"
    build_tiny_upscaler().save_pretrained(folder, safe_serialization=True)
    purifier = NoisyUpscale(NoisyUpscale.Config(upscaler_path=str(folder), upscaler_steps=2))
    context = AttackContext(prompt="a painting of a lighthouse")
    out = purifier(images, None, generator=torch.Generator().manual_seed(1), context=context)
    assert context.notes["upscale"] == {
        "upscaler": str(folder),
        "prompt": "a painting of a lighthouse",
        "low_res_noise_timestep": 0,
    }
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    again = purifier(
        images,
        None,
        generator=torch.Generator().manual_seed(1),
        context=AttackContext(prompt="a painting of a lighthouse"),
    )
    assert torch.equal(out, again)
    bicubic, _ = call(NoisyBicubicUpscale(), images, seed=1)
    assert (out - bicubic).abs().mean() > 1e-3


def test_upscale_defaults_are_hoenig_et_al(images):
    config = NoisyUpscale.Config()
    assert (config.sigma, config.upscaler_noise_level, config.upscaler_steps, config.upscaler_guidance) == (
        0.1,
        320,
        75,
        9.0,
    )


def test_diffpure_at_zero_is_the_vae_round_trip(tiny_model, images):
    out, context = call(DiffPure(DiffPure.Config(t_star=0.0)), images, tiny_model, seed=4)
    with torch.no_grad():
        round_trip = tiny_model.decode(tiny_model.encode(images, generator=torch.Generator().manual_seed(4)))
    torch.testing.assert_close(out, round_trip, atol=1e-6, rtol=0)
    assert context.notes["diffpure-latent"]["timesteps"] == []


def test_diffpure_noises_to_exactly_t_star(tiny_model, images):
    assert purification_timesteps(100, 10) == list(range(100, 0, -10))
    assert purification_timesteps(3, 10) == [3, 2, 1]
    purifier = DiffPure(DiffPure.Config(steps=2))
    out, context = call(purifier, images, tiny_model, seed=4)
    assert context.notes["diffpure-latent"] == {"t_star": 100, "timesteps": [100, 50]}
    assert torch.equal(out, call(purifier, images, tiny_model, seed=4)[0])
    round_trip, _ = call(DiffPure(DiffPure.Config(t_star=0.0)), images, tiny_model, seed=4)
    assert (out - round_trip).abs().mean() > 1e-3
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_impress_l2_lowers_its_consistency_loss(tiny_model, images):
    # pur_noise 0: the initial noise the authors add raises the loss first; here only the descent is measured.
    purifier = Impress(Impress.Config(distance="l2", steps=8, pur_noise=0.0))
    out, context = call(purifier, images, tiny_model)
    with torch.no_grad():
        before = consistency_loss(tiny_model, images)
        after = consistency_loss(tiny_model, out)
    assert (after < 0.8 * before).all()
    assert context.notes["impress"]["consistency_after"] == pytest.approx(after.tolist(), rel=1e-4)
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_impress_lpips_without_weights_is_unavailable(tmp_path, monkeypatch, tiny_model, images):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CLOAKBENCH_VGG16", raising=False)
    monkeypatch.delenv("CLOAKBENCH_ALEXNET", raising=False)
    purifier = Impress()  # distance="lpips" on VGG by default, as the authors' code
    with pytest.raises(AttackUnavailable) as error:
        purifier.check_available()
    assert "vgg16-397923af.pth" in str(error.value) and str(tmp_path) in str(error.value)
    with pytest.raises(AttackUnavailable, match="vgg16-397923af.pth"):
        call(purifier, images, tiny_model)
    with pytest.raises(AttackUnavailable, match="alexnet-owt-7be5be79.pth"):
        Impress.from_overrides({"lpips_net": "alex"}).check_available()


def test_impress_defaults_are_the_authors(tiny_model):
    """AAAAAAsuka/Impress glaze_pur.py:91-94, impress.py:12-14, scripts/new/test_all.sh:12-16."""
    config = Impress.Config()
    assert (config.steps, config.lr, config.alpha, config.eps_lpips, config.lpips_net) == (3000, 0.01, 0.1, 0.1, "vgg")
    assert (config.adam_eps, config.lr_min) == (1e-5, 1e-5)
    assert config.pur_noise == 0.1  # scripts/new/test_all.sh:16 and the README (0.05 for PhotoGuard)


def test_impress_anneals_its_learning_rate(tiny_model, images, monkeypatch):
    """Adam's learning rate follows a cosine from lr to lr_min over the steps, as CosineAnnealingLR does."""
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    call(Impress(Impress.Config(distance="l2", steps=4, lr=0.01, lr_min=0.001)), images, tiny_model)
    import math

    expected = [0.001 + 0.5 * (0.01 - 0.001) * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert seen == pytest.approx(expected)


@pytest.mark.slow
def test_impress_lpips_uses_the_found_backbone(tmp_path, monkeypatch, tiny_model, images):
    """Writes a (random) torchvision AlexNet checkpoint (~240 MB) where torch hub looks."""
    import torchvision

    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), checkpoints / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CLOAKBENCH_ALEXNET", raising=False)
    out, context = call(Impress(Impress.Config(steps=3, lpips_net="alex")), images, tiny_model)
    assert context.notes["impress"]["distance"] == "lpips" and out.shape == images.shape


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("jpeg", {}),
        ("blur", {}),
        ("noise", {}),
        ("upscale-bicubic", {}),
        ("diffpure-latent", {"steps": "2"}),
        ("impress", {"distance": "l2", "steps": "2"}),
        ("counter-pgd", {"steps": "2"}),  # adaptive: the copier's PGD from the published image
    ],
)
def test_purifications_deterministic_shape_range(name, overrides, tiny_model, images):
    purifier = MIMICRY.get(name).from_overrides(overrides)
    first, _ = call(purifier, images, tiny_model, seed=7)
    second, _ = call(purifier, images, tiny_model, seed=7)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, second)
    assert not np.isclose(float((first - images).abs().mean()), 0.0)


def spy_on_upscaler(pipe):
    """Record the low-res noising timesteps, the UNet's noise-level labels and its low-res input channels."""
    seen = {"add_noise": [], "class_labels": [], "low_res": []}
    scheduler = pipe.low_res_scheduler
    real_add_noise = scheduler.add_noise

    def add_noise(original, noise, timesteps):
        seen["add_noise"].append(torch.as_tensor(timesteps).flatten().tolist())
        return real_add_noise(original, noise, timesteps)

    scheduler.add_noise = add_noise

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        seen["class_labels"].append(kwargs["class_labels"].flatten().tolist())
        seen["low_res"].append(sample[:, module.config.out_channels :].detach().clone())

    pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_upscale_noises_the_low_res_image_as_hoenig_et_als_fork(images, monkeypatch):
    """roberthoenig/diffusers pipeline_stable_diffusion_upscale.py:686 with robust-style-mimicry upscale.py:37:
    the low-res image is noised at 320 − 320 = 0 while the UNet is told noise level 320.

    Fails on the version-2 ``upscale`` (stock diffusers: noised at 320, std ≈ 0.55 on [-1, 1])."""
    from cloakbench.mimicry import upscale as upscale_module

    pipe = build_tiny_upscaler()
    pipe.set_progress_bar_config(disable=True)
    seen = spy_on_upscaler(pipe)
    monkeypatch.setattr(upscale_module, "build_tiny_upscaler", lambda seed=0: pipe)
    purifier = NoisyUpscale(NoisyUpscale.Config(upscaler_path="tiny-random-upscaler", upscaler_steps=2, sigma=0.0))
    context = AttackContext(prompt="a painting")
    out = purifier(images, None, generator=torch.Generator().manual_seed(0), context=context)
    assert out.shape == images.shape
    assert seen["add_noise"] == [[0]]
    assert all(labels == [320] * len(labels) for labels in seen["class_labels"]) and seen["class_labels"]
    # σ = 0: the UNet's low-res channels are the image in [-1, 1] plus the fork's t = 0 noise only.
    expected = images * 2 - 1
    beta0 = float(pipe.low_res_scheduler.betas[0])
    for low_res in seen["low_res"]:
        residual = low_res[: images.shape[0]] - expected * (1 - beta0) ** 0.5
        assert float(residual.std()) == pytest.approx(beta0**0.5, rel=0.1)
    assert context.notes["upscale"]["low_res_noise_timestep"] == 0


def test_upscale_stock_keeps_stock_diffusers_noising_under_its_own_name(images, monkeypatch):
    """``upscale-stock``: the image noised at the 320 the UNet is told (stock diffusers), std √(1−ᾱ₃₂₀)."""
    from cloakbench.mimicry import MIMICRY
    from cloakbench.mimicry import upscale as upscale_module

    pipe = build_tiny_upscaler()
    pipe.set_progress_bar_config(disable=True)
    seen = spy_on_upscaler(pipe)
    monkeypatch.setattr(upscale_module, "build_tiny_upscaler", lambda seed=0: pipe)
    stock = MIMICRY.get("upscale-stock").from_overrides(
        {"upscaler_path": "tiny-random-upscaler", "upscaler_steps": "2", "sigma": "0"}
    )
    stock(images, None, generator=torch.Generator().manual_seed(0), context=AttackContext())
    assert seen["add_noise"] == [[320]]
    alpha = float(pipe.low_res_scheduler.alphas_cumprod[320])
    residual = seen["low_res"][0][: images.shape[0]] - (images * 2 - 1) * alpha**0.5
    assert float(residual.std()) == pytest.approx((1 - alpha) ** 0.5, rel=0.1)
    assert type(pipe.low_res_scheduler).__name__ == "DDPMScheduler"  # the wrapper was taken off again


def authors_impress(x_adv, vae, lpips_network, initial_noise, eps, iters, lr, pur_alpha, noise):
    """AAAAAAsuka/Impress impress.py:7-29 as written (fp32, and the initial ε passed in rather than drawn)."""
    x_p = x_adv.clone().detach() + initial_noise * noise
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.Adam([x_p], lr=lr, eps=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters, eta_min=1e-5)
    for _ in range(iters):
        x_p.requires_grad_(True)
        reconstruction = vae(x_p).sample
        optimizer.zero_grad()
        lnorm_loss = criterion(reconstruction, x_p)
        d = lpips_network(x_p, x_adv)
        lpips_loss = max(d - eps, 0)
        loss = lnorm_loss + pur_alpha * lpips_loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        x_p.data = torch.clamp(x_p, min=-1, max=1)
    return x_p.detach()


@pytest.mark.filterwarnings("ignore::UserWarning:torchvision.models._utils")
def test_impress_replays_the_authors_update(tiny_model, images, monkeypatch):
    """Five steps of ours vs the authors' loop (glaze_pur.py:51-62 around impress.py:7-29) on tiny-random,
    the same LPIPS network (a seeded random AlexNet: no download) and the same initial noise: within 0.5/255.

    Fails on version 2 ([0, 1] variable: twice the step; and no initial noise)."""
    import lpips

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    network.requires_grad_(False)
    monkeypatch.setattr(Impress, "check_available", lambda self: None)
    monkeypatch.setattr(Impress, "_lpips_network", lambda self, device: network)
    x = images[:1]
    config = Impress.Config(steps=5, eps_lpips=0.01)  # a budget the first steps cross, so the LPIPS term acts
    ours, _ = call(Impress(config), x, tiny_model, seed=3)
    epsilon = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    theirs = authors_impress(
        x * 2 - 1, tiny_model.vae, network, epsilon, config.eps_lpips, config.steps, config.lr, config.alpha, 0.1
    )
    theirs = (theirs / 2 + 0.5).clamp(0, 1)
    assert float((ours - theirs).abs().max()) <= 0.5 / 255
    assert float((ours - x).abs().mean()) > 2 / 255  # the replay compares two runs that moved, not two no-ops
    # Without the initial noise the step size alone is compared (version 2's [0, 1] variable: twice theirs).
    quiet, _ = call(Impress(dataclasses.replace(config, pur_noise=0.0)), x, tiny_model, seed=3)
    theirs = authors_impress(
        x * 2 - 1, tiny_model.vae, network, epsilon, config.eps_lpips, config.steps, config.lr, config.alpha, 0.0
    )
    assert float((quiet - (theirs / 2 + 0.5).clamp(0, 1)).abs().max()) <= 0.5 / 255
    assert float((quiet - x).abs().mean()) > 1 / 255
