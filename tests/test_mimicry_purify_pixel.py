"""Pixel-space purifiers (diffpure, gridpure, pdm-pure, pdm-pure-uncond) on the seeded tiny pixel model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cloakbench.core.images import quantize_8bit
from cloakbench.core.pixel_models import TINY_PIXEL_RESOLUTION, load_pixel_model, respaced_timesteps
from cloakbench.mimicry import MIMICRY, AttackContext, AttackUnavailable
from cloakbench.mimicry.gridpure import corner_mosaic, grid_boxes, grid_starts, merge
from cloakbench.mimicry.pdm_pure import pdm_timesteps, support_timestep

TINY = {"pixel_model": "tiny-pixel-random"}
PIXEL_PURIFIERS = [
    ("diffpure", {**TINY, "steps": 3}),
    ("gridpure", {**TINY, "steps": 2, "iterations": 2}),
    ("pdm-pure-uncond", TINY),
]


def run(name, overrides, images, model=None, seed=0):
    context = AttackContext()
    out = MIMICRY.get(name).from_overrides(overrides)(
        images, model, generator=torch.Generator().manual_seed(seed), context=context
    )
    return out, context


def smooth(count, side, seed=0, width=None):
    coarse = torch.rand(count, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    size = (side, width or side)
    return quantize_8bit(torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False))


class NoVAE(torch.nn.Module):
    """Stands in for the LDM's autoencoder: any use fails the test."""

    def __getattr__(self, name):
        if name in ("encode", "decode", "forward", "tiled_encode", "tiled_decode"):
            raise AssertionError(f"a pixel purifier used the LDM's VAE ({name})")
        return super().__getattr__(name)


@pytest.fixture()
def ldm_without_vae(tiny_model):
    return dataclasses.replace(tiny_model, vae=NoVAE())


@pytest.mark.parametrize("name,overrides", PIXEL_PURIFIERS, ids=[n for n, _ in PIXEL_PURIFIERS])
def test_pixel_purifiers_never_touch_the_ldm_vae(name, overrides, ldm_without_vae, clean8):
    out, context = run(name, overrides, clean8, ldm_without_vae)
    assert out.shape == clean8.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert context.notes[name]["pixel_model"].startswith("tiny-pixel-random (")


def test_the_vae_guard_catches_the_latent_purifier(ldm_without_vae, clean8):
    """The guard above can fail: the latent variant goes through the VAE and is caught."""
    with pytest.raises(AssertionError, match="used the LDM's VAE"):
        run("diffpure-latent", {"steps": 2}, clean8, ldm_without_vae)


def test_diffpure_follows_nie_et_al_timesteps():
    """DiffPure noises with ᾱ[t−1] and takes t ancestral steps t−1 … 0 (runners/diffpure_guided.py:60-75)."""
    full = respaced_timesteps(150)
    assert full[0] == 149 and full[-1] == 0 and len(full) == 150
    assert respaced_timesteps(150, 4) == [149, 99, 50, 0]
    assert respaced_timesteps(0) == [] and respaced_timesteps(1, 5) == [0]
    assert MIMICRY.get("diffpure").Config().t_star == 0.15  # run_scripts/imagenet/run_in_rand_inf.sh: --t 150


def test_diffpure_at_zero_returns_the_input():
    images = smooth(2, TINY_PIXEL_RESOLUTION, seed=1)
    out, context = run("diffpure", {**TINY, "t_star": 0.0}, images)
    assert torch.equal(quantize_8bit(out), images)
    assert context.notes["diffpure"]["t"] == 0 and context.notes["diffpure"]["reverse_steps"] == 0


def centred_correlation(a, b):
    a, b = a - a.mean(dim=(-2, -1), keepdim=True), b - b.mean(dim=(-2, -1), keepdim=True)
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_diffpure_small_t_keeps_the_picture_and_large_t_loses_it():
    images = smooth(2, TINY_PIXEL_RESOLUTION, seed=2)
    small, _ = run("diffpure", {**TINY, "t_star": 0.01}, images, seed=3)
    large, _ = run("diffpure", {**TINY, "t_star": 1.0, "steps": 8}, images, seed=3)
    assert centred_correlation(small, images) > 0.9
    assert abs(centred_correlation(large, images)) < 0.3
    assert float((large - images).abs().mean()) > 5 * float((small - images).abs().mean())


def test_diffpure_resizes_to_the_model_and_back_and_is_seeded(clean8):
    assert clean8.shape[-1] != TINY_PIXEL_RESOLUTION
    first, _ = run("diffpure", {**TINY, "steps": 2}, clean8, seed=5)
    second, _ = run("diffpure", {**TINY, "steps": 2}, clean8, seed=5)
    other, _ = run("diffpure", {**TINY, "steps": 2}, clean8, seed=6)
    assert first.shape == clean8.shape and torch.equal(first, second) and not torch.equal(first, other)


def test_grid_matches_gridpure_offsets():
    """gridpure.py:64-82 for a 512² image and the 256² model; a side that is no multiple adds its last offset."""
    assert grid_starts(512, 256) == [0, 128, 256]
    assert grid_starts(600, 256) == [0, 128, 256, 344]
    assert grid_starts(256, 256) == [0]
    assert len(grid_boxes(512, 512, 256)) == 9


@pytest.mark.parametrize("height,width", [(64, 64), (80, 112), (32, 32)])
def test_gridpure_merge_is_seamless(height, width):
    """Unmodified patches merge back to the image exactly; a constant image stays constant."""
    patch = 32
    for images in (torch.full((1, 3, height, width), 0.37), smooth(1, height, seed=4, width=width)):
        boxes = grid_boxes(height, width, patch)
        crops = [images[..., top:bottom, left:right] for top, left, bottom, right in boxes]
        merged = merge(crops, boxes, corner_mosaic(images, patch), images.shape)
        torch.testing.assert_close(merged, images, atol=1e-6, rtol=0)


def test_gridpure_covers_every_pixel_and_corners_twice():
    """Each corner is covered by one grid patch and by the corner mosaic, as in gridpure.py:84-99."""
    height, width, patch = 80, 112, 32
    ones = torch.ones(1, 1, height, width)
    boxes = grid_boxes(height, width, patch)
    count = torch.zeros(height, width)
    for top, left, bottom, right in boxes:
        count[top:bottom, left:right] += 1
    assert (count >= 1).all() and count[0, 0] == 1 and count[-1, -1] == 1
    mosaic = corner_mosaic(ones * torch.arange(width).float(), patch)
    assert mosaic.shape[-2:] == (patch, patch) and float(mosaic[0, 0, 0, -1]) == width - 1


def test_gridpure_at_zero_returns_the_input_through_the_whole_loop():
    images = smooth(1, 48, seed=7, width=64)  # larger than the 32² model: a real grid
    out, context = run("gridpure", {**TINY, "t_star": 0.0, "iterations": 3}, images)
    assert torch.equal(quantize_8bit(out), images)
    assert context.notes["gridpure"]["patches"] == len(grid_boxes(48, 64, TINY_PIXEL_RESOLUTION)) + 1


def test_gridpure_purifies_and_blends_with_gamma():
    images = smooth(1, 48, seed=8, width=64)
    gentle, _ = run("gridpure", {**TINY, "iterations": 2, "gamma": 0.9}, images, seed=1)
    strong, _ = run("gridpure", {**TINY, "iterations": 2, "gamma": 0.0}, images, seed=1)
    assert float((strong - images).abs().mean()) > float((gentle - images).abs().mean()) > 0


def test_gridpure_defaults_are_the_readme_command():
    config = MIMICRY.get("gridpure").Config()
    assert (config.t_star, config.iterations, config.gamma) == (0.01, 20, 0.1)


def if_respacing(total, section_counts, less_qsample_steps):
    """guided-diffusion's space_timesteps and IF's support q-sample index, written out independently:
    (the timesteps the reverse loop runs, decreasing; the timestep the support image is noised to)."""
    per = total // len(section_counts)
    kept = []
    for section, count in enumerate(section_counts):
        if count == 0:
            continue
        stride = 1 if count <= 1 else (per - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(section * per + round(position))
            position += stride
    timestep_map = sorted(set(kept))
    return timestep_map[::-1], timestep_map[len(timestep_map) - 1 - less_qsample_steps]


PDM_RESPACING = if_respacing(1000, [10] + [0] * 9, 5)  # pdm_pure.py:19 and :48


def test_pdm_pure_timesteps_are_the_authors_respacing():
    """pdm_pure.py:19 ("10,0,…,0") and :48 (support q-sampled 5 steps less): noised to 44, run 99 … 0."""
    assert PDM_RESPACING == ([99, 88, 77, 66, 55, 44, 33, 22, 11, 0], 44)
    assert pdm_timesteps(10, 10) == PDM_RESPACING[0]
    assert support_timestep(pdm_timesteps(10, 10), 5) == PDM_RESPACING[1]
    with pytest.raises(ValueError, match="less_qsample_steps"):
        support_timestep(pdm_timesteps(10, 10), 9)


def test_pdm_pure_uncond_runs_ifs_schedule(monkeypatch):
    """The spied schedule: the image noised once at 44, the UNet then called at every respaced step from 99.

    Fails on version 1 (noised at 44, then only 44, 33, 22, 11, 0)."""
    from cloakbench.core.pixel_models import PixelDiffusion

    noised, called = [], []
    real_noise_to, real_predict = PixelDiffusion.noise_to, PixelDiffusion.predict_noise

    def noise_to(self, images, timestep, generator=None):
        noised.append(int(timestep))
        return real_noise_to(self, images, timestep, generator)

    def predict_noise(self, x_t, t):
        called.append(int(torch.as_tensor(t).flatten()[0]))
        return real_predict(self, x_t, t)

    monkeypatch.setattr(PixelDiffusion, "noise_to", noise_to)
    monkeypatch.setattr(PixelDiffusion, "predict_noise", predict_noise)
    _, context = run("pdm-pure-uncond", TINY, smooth(1, TINY_PIXEL_RESOLUTION))
    timesteps, support = PDM_RESPACING
    assert noised == [support] and called == timesteps
    assert context.notes["pdm-pure-uncond"]["timesteps"] == timesteps
    assert context.notes["pdm-pure-uncond"]["support_timestep"] == support


def test_pdm_pure_without_if_stage_ii_is_unavailable(tmp_path, monkeypatch, clean8):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("CLOAKBENCH_IF_STAGE_II", raising=False)
    attack = MIMICRY.get("pdm-pure")()
    with pytest.raises(AttackUnavailable) as caught:
        attack.check_available()
    reason = str(caught.value)
    assert "DeepFloyd/IF-II-L-v1.0" in reason and "unet/diffusion_pytorch_model.safetensors" in reason
    assert str(tmp_path) in reason and "pdm-pure-uncond" in reason
    with pytest.raises(AttackUnavailable):
        attack(clean8, None, generator=torch.Generator().manual_seed(0), context=AttackContext())


def test_a_missing_pixel_model_is_unavailable_naming_the_file(tmp_path, clean8):
    folder = tmp_path / "pixel"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    for name in ("diffpure", "gridpure", "pdm-pure-uncond"):
        attack = MIMICRY.get(name).from_overrides({"pixel_model": str(folder)})
        with pytest.raises(AttackUnavailable, match="unet/config.json"):
            attack.check_available()
        with pytest.raises(AttackUnavailable, match=str(folder)):
            attack(clean8, None, generator=torch.Generator().manual_seed(0), context=AttackContext())


def test_the_pixel_model_is_part_of_the_identity():
    tiny = MIMICRY.get("diffpure").from_overrides(TINY).identity()
    assert tiny["pixel_model"]["name"] == "tiny-pixel-random"
    assert tiny["pixel_model"]["weights_hash"] == load_pixel_model("tiny-pixel-random").weights_hash


def test_the_tiny_pixel_model_is_seeded_and_frozen():
    first, second = load_pixel_model("tiny-pixel-random"), load_pixel_model("tiny-pixel-random", seed=1)
    assert not any(p.requires_grad for p in first.unet.parameters())
    weights = [(a, b) for a, b in zip(first.unet.parameters(), second.unet.parameters())]
    assert any(not torch.equal(a, b) for a, b in weights)
    again = load_pixel_model("tiny-pixel-random")
    assert all(torch.equal(a, b) for a, b in zip(first.unet.parameters(), again.unet.parameters()))


def tiny_if_stage_ii():
    """A seeded random pipeline of IF stage II's shape (6-channel UNet with a noise-level embedding,
    T5 text encoder, learned-range variance), with no attention so 256² stays cheap on a CPU."""
    from diffusers import DDPMScheduler, IFImg2ImgSuperResolutionPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    from cloakbench.core.architectures import project_tokenizer

    tokenizer = project_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = T5EncoderModel(
            T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
        )
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=6,
            out_channels=6,
            layers_per_block=1,
            block_out_channels=(16, 32),
            norm_num_groups=8,
            cross_attention_dim=32,
            class_embed_type="timestep",
            down_block_types=("DownBlock2D",) * 2,
            up_block_types=("UpBlock2D",) * 2,
        )
    pipe = IFImg2ImgSuperResolutionPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DDPMScheduler(variance_type="learned_range", thresholding=True, clip_sample=False),
        image_noising_scheduler=DDPMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.slow
def test_pdm_pure_runs_the_authors_steps_through_an_if_stage_ii_pipeline(monkeypatch):
    """With an IF-II-shaped pipeline in place of the cached one: the support image noised once at 44 (the
    scheduler's add_noise, spied), then the UNet at all ten respaced steps 99 … 0 (its timesteps, spied;
    guidance batches both passes into one call), back at the input's size. Fails on version 1 (44 … 0)."""
    from cloakbench.core import pixel_models, weights

    pipe = tiny_if_stage_ii()
    seen, noised = [], []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(int(torch.as_tensor(args[1]).flatten()[0])))
    real_add_noise = pipe.scheduler.add_noise

    def add_noise(original, noise, timesteps):
        noised.append(torch.as_tensor(timesteps).flatten().tolist())
        return real_add_noise(original, noise, timesteps)

    pipe.scheduler.add_noise = add_noise
    real_find = weights.find
    monkeypatch.setattr(
        weights, "find", lambda spec, path=None: "cached" if spec is weights.IF_STAGE_II else real_find(spec, path)
    )
    monkeypatch.setattr(pixel_models, "load_if_stage_ii", lambda *args, **kwargs: pipe)
    images = smooth(1, 64, seed=9)
    context = AttackContext(prompt="a photo of a lighthouse")
    out = MIMICRY.get("pdm-pure")()(images, None, generator=torch.Generator().manual_seed(0), context=context)
    timesteps, support = PDM_RESPACING
    assert noised == [[support]]
    assert seen == timesteps
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert context.notes["pdm-pure"]["timesteps"] == timesteps
    assert context.notes["pdm-pure"]["support_timestep"] == support
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"  # the wrapper was taken off again
