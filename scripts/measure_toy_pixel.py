"""Measure ``toy-pixel`` and write ``models/toy-pixel/measurements.json``, ``samples_grid.png``
and ``MODEL_CARD.md``.

On the held-out ``samples`` (astronaut, chelsea, coffee, rocket; never trained on) at the
model's working size (128²), through ``cloakbench.core.images.load_sample`` as the bench
loads them:

- ``x0_psnr``: for several t, the one-step estimate ``x̂_0 = (x_t - √(1-ᾱ_t) ε_θ)/√ᾱ_t``
  (Ho et al., arXiv:2006.11239, eq. 15) against the clean image, beside the PSNR of the
  noisy ``x_t`` itself; one seeded noise draw per t.
- ``purification``: DiffPure's check (Nie et al., ICML 2022, arXiv:2205.07460): diffuse to
  ``t* = 0.1·T`` and run the DDPM reverse process back to 0 (ancestral, every timestep),
  exactly as ``PixelDiffusion.purify(images, t*)`` does (DiffPure's convention: noised with
  ``ᾱ[t*-1]``, ``t*`` reverse steps ``t*-1 … 0``); PSNR against the input; target ≥ 20 dB mean.
- ``samples_grid.png``: rows input, ``x_t*``, purified, one-step ``x̂_0`` from t = 0.3·T,
  and 4 samples from pure noise (DDIM, 50 steps, η = 0).

Usage: ``python scripts/measure_toy_pixel.py [--model toy-pixel] [--threads 1]``;
``--card-only`` re-renders the card from the JSON files.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_files import files_section  # noqa: E402  (scripts/model_files.py)

from cloakbench.core.pixel_models import TOY_PIXEL_MODEL_DIR, load_pixel_model, respaced_timesteps  # noqa: E402
from cloakbench.core.toy_data import HELD_OUT, TRAIN, held_out_images  # noqa: E402

log = logging.getLogger("measure_toy_pixel")

SEED = 0
T_STAR = 0.1
X0_TIMESTEPS = (10, 50, 100, 200, 300, 500, 750, 999)
GOAL_DB = 20.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return [float(v) for v in 10 * torch.log10(1.0 / mse.clamp_min(1e-12))]


def summary(values: list[float], names=HELD_OUT) -> dict:
    return {
        "per_image": dict(zip(names, [round(v, 3) for v in values])),
        "mean": round(sum(values) / len(values), 3),
        "min": round(min(values), 3),
    }


@torch.no_grad()
def measure(model, images: torch.Tensor) -> tuple[dict, list[torch.Tensor]]:
    table = {}
    for t in X0_TIMESTEPS:
        x_t = model.add_noise(images, t, torch.Generator().manual_seed(SEED + t))
        x0 = model.from_model_range(model.predict_x0(x_t, t))
        table[str(t)] = {"x0": summary(psnr(x0, images)), "noisy": summary(psnr(model.from_model_range(x_t), images))}
        log.info("t=%d x0 %.2f dB (noisy %.2f dB)", t, table[str(t)]["x0"]["mean"], table[str(t)]["noisy"]["mean"])
    t_star = round(T_STAR * model.num_train_timesteps)
    generator = torch.Generator().manual_seed(SEED)
    started = time.time()
    # PixelDiffusion.purify's two halves, kept apart so the grid can show x_t*.
    timesteps = respaced_timesteps(t_star)
    x_t = model.noise_to(images, timesteps[0], generator)
    purified = model.reverse(x_t, timesteps, generator)
    seconds = time.time() - started
    values = psnr(purified, images)
    purification = {
        "t_star": t_star,
        "t_star_fraction": T_STAR,
        "sampler": f"DDPM ancestral, every timestep ({timesteps[0]} … 0; PixelDiffusion.purify)",
        "seed": SEED,
        "psnr_vs_input": summary(values),
        "noisy_psnr_vs_input": summary(psnr(model.from_model_range(x_t), images)),
        "goal_db": GOAL_DB,
        "met": sum(values) / len(values) >= GOAL_DB,
        "seconds_for_4_images": round(seconds, 1),
    }
    log.info("purification t*=%d: %.2f dB", t_star, purification["psnr_vs_input"]["mean"])
    t_mid = int(0.3 * model.num_train_timesteps)
    x_mid = model.add_noise(images, t_mid, torch.Generator().manual_seed(SEED + t_mid))
    one_step = model.from_model_range(model.predict_x0(x_mid, t_mid))
    samples = ddim_samples(model, len(images), steps=50)
    rows = [images, model.from_model_range(x_t), purified, one_step, samples]
    return {"x0_psnr": table, "purification": purification}, rows


@torch.no_grad()
def ddim_samples(model, n: int, steps: int) -> torch.Tensor:
    """Unconditional samples from pure noise (DDIM, η = 0; Song et al., arXiv:2010.02502)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(steps)
    size = model.resolution
    x = torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(SEED + 12345))
    for t in scheduler.timesteps:
        x = scheduler.step(model.predict_noise(x, int(t)), int(t), x).prev_sample
    return model.from_model_range(x)


def write_grid(rows: list[torch.Tensor], path: Path) -> None:
    from cloakbench.core.images import save_png

    save_png(torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1), path)


def write_card(folder: Path) -> Path:
    """Render MODEL_CARD.md from train_log.json, measurements.json and SHA256SUMS in ``folder``."""
    train = json.loads((folder / "train_log.json").read_text())
    result = json.loads((folder / "measurements.json").read_text())
    config = train["unet_config"]
    losses = train["losses"]
    last = [r for r in losses if "loss" in r][-1] if losses else {}
    monitor = [r for r in losses if "held_out_x0_psnr_t100" in r]
    minutes = train["minutes"]
    pur = result["purification"]
    x0_rows = [
        f"| {t} | {row['x0']['mean']:.2f} | {row['x0']['min']:.2f} | {row['noisy']['mean']:.2f} |"
        for t, row in result["x0_psnr"].items()
    ]
    params = result.get("parameters", 0)
    text = [
        "# toy-pixel — a tiny pixel-space DDPM for purification, trained by cloakbench",
        "",
        "**Not a generative model worth the name, and not the DiffPure checkpoint.** A diffusers",
        f"`UNet2DModel` ({params / 1e6:.1f} M parameters) trained for ε-prediction on a linear DDPM",
        "schedule (Ho et al., arXiv:2006.11239) on the same ~20 pictures as `toy`, on a 2-core CPU.",
        "It exists so that pixel-space purifications — DiffPure (Nie et al., ICML 2022,",
        "arXiv:2205.07460), GrIDPure, PDM-Pure — have a *trained* pixel denoiser to run offline:",
        "noise a (protected) image to a small t*, denoise it back, and see what is left of the",
        "protection. Its numbers are properties of this toy, not of any published model.",
        "",
        'Load it with `cloakbench.core.pixel_models.load_pixel_model("toy-pixel")` (a `PixelDiffusion`:',
        "`unet`, `scheduler`, `resolution`, `noise_to`, `predict_x0`, `reverse`, `purify`); the folder is",
        "also a diffusers `DDPMPipeline` folder.",
        "",
        "## Architecture (working size 128²)",
        "",
        f"- UNet: `UNet2DModel` {list(config['block_out_channels'])}, layers_per_block {config['layers_per_block']}, "
        "`DownBlock2D`/`UpBlock2D` only (no attention: fully convolutional, so it runs at any size; trained on",
        "  64² patches, used at 128²), GroupNorm groups 8, 3 → 3 channels, input and output in [-1, 1].",
        f"- Scheduler: `DDPMScheduler`, β linear {train['scheduler_config']['beta_start']:g}–"
        f"{train['scheduler_config']['beta_end']:g}, T = {train['scheduler_config']['num_train_timesteps']}, "
        "ε-prediction, `variance_type` fixed_small, `clip_sample` true (DDPM's own schedule, which DiffPure's",
        "  pixel models use — not SD's scaled-linear latent schedule).",
        "",
        "## Data and resolution",
        "",
        f"The toy's training pictures only ({len(TRAIN)} pictures from scikit-image and matplotlib; list and captions",
        "in `models/toy/MODEL_CARD.md`; captions unused here). **Held out**: astronaut, chelsea, coffee, rocket.",
        "Crops at several scales are resized so that their short side is 128·s (s ∈ {1, 1.25, 1.5, 2, 3}), as the",
        "bench sees a picture at 128², then a random 64² patch is cut, with horizontal flips. Choice of size: the",
        "model works at 128² (the bench's size); 64² patches of 128²-scale crops cost a quarter of a 128² step",
        "and, with a fully convolutional UNet, have the statistics it meets at 128².",
        "",
        "## Training (`scripts/train_toy_pixel.py`, seed 0)",
        "",
        f"Command: `{train['command']}` (then `python scripts/train_toy_pixel.py --work /work/toywork/pixel "
        "--export models/toy-pixel`), one torch thread, on a 2-core x86-64 CPU shared with other jobs",
        "(two training processes of this project ran side by side). Stops at its step count or its",
        "time budget; resumable from the work folder's checkpoint.",
        "",
        "| stage | steps | batch | wall (min) | final logged loss |",
        "|---|---|---|---|---|",
        f"| UNet, ε-MSE; t: {train['timesteps']}; AdamW lr {train['args']['lr']:g} "
        f"(warm-up {train['args']['warmup']}, cosine to 10 %); EMA ≤ {train['args']['ema']:g} | {train['steps']} | "
        f"{train['args']['batch']} × {train['args']['patch']}² | {minutes:.0f} | "
        f"{last.get('loss', float('nan')):.4f} (step {last.get('step', 0)}) |",
        "",
        "Half the timesteps are drawn from [0, 0.3·T): purification starts at t* ≤ 0.3·T, and the model must",
        "still denoise from pure noise for the sample grid. Shipped weights are the EMA.",
        (
            f"Held-out x̂₀ PSNR at t = 100 during training (EMA; monitoring only, no selection): "
            f"{monitor[-1]['held_out_x0_psnr_t100']:.2f} dB (step {monitor[-1]['step']})."
            if monitor
            else ""
        ),
        "Every logged loss is in `train_log.json`.",
        "",
        "## Measured (`scripts/measure_toy_pixel.py` → `measurements.json`, `samples_grid.png`)",
        "",
        f"Machine: {result['machine']}. Held-out photos at {result['resolution']}², seeded noise.",
        "",
        "**Purification check** (`PixelDiffusion.purify(images, t_star="
        + str(pur["t_star"])
        + ")`: t* = 0.1·T; noised "
        f"with ᾱ[t*−1] as DiffPure does, then DDPM ancestral steps t*−1 … 0, seed {pur['seed']}):",
        "",
        "| target | goal | measured (mean over the 4 held-out images; min) | met |",
        "|---|---|---|---|",
        f"| purified vs input, PSNR | ≥ {pur['goal_db']:g} dB | {pur['psnr_vs_input']['mean']:.1f} dB "
        f"(min {pur['psnr_vs_input']['min']:.1f} dB) | {'yes' if pur['met'] else 'no'} |",
        "",
        f"For scale: the noised x_t* itself is {pur['noisy_psnr_vs_input']['mean']:.1f} dB from the input. Per image: "
        + ", ".join(f"{n} {v:.2f}" for n, v in pur["psnr_vs_input"]["per_image"].items())
        + f" dB. {pur['seconds_for_4_images']:.0f} s for the 4 images ({pur['t_star']} UNet calls at batch 4).",
        "",
        "**Denoising quality**: one-step x̂₀ PSNR against the clean image (dB), and of the noisy x_t for scale:",
        "",
        "| t | x̂₀ mean | x̂₀ min | x_t mean |",
        "|---|---|---|---|",
        *x0_rows,
        "",
        "`samples_grid.png` rows (columns: astronaut, chelsea, coffee, rocket): input; x_t* (t* = 0.1·T); purified;",
        "one-step x̂₀ from t = 0.3·T; then 4 unconditional samples from pure noise (DDIM, 50 steps, η = 0).",
        f"**The samples from pure noise are grey, noise-like texture, not pictures**: in its {train['steps']}",
        "steps the model learnt the small-t end, which purification needs and which is learnt first, but",
        "not the large-t end (above, x̂₀ from t ≥ 750 is no closer to the image than x_t itself). It is a",
        "denoiser for t ≤ 0.3·T, not a generator; ~20 training pictures would not make one anyway.",
        "Purification time above was measured on a CPU shared with other jobs (load average up to ~19 on",
        "2 cores); alone it is several times faster.",
        "",
        "## What it is not",
        "",
        "- Not the guided-diffusion / score-SDE checkpoint DiffPure uses, not trained on web data.",
        "- Its purification numbers say how the harness behaves with a trained pixel denoiser, not how",
        "  strong DiffPure is against a protection on real models.",
        "",
        *files_section(folder),
    ]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(line for line in text if line is not None))
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-pixel")
    parser.add_argument("--out", default=str(TOY_PIXEL_MODEL_DIR / "measurements.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--card-only", action="store_true")
    args = parser.parse_args(argv)
    if args.card_only:
        write_card(Path(args.out).parent)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    model = load_pixel_model(args.model)
    images = torch.stack(list(held_out_images(model.resolution).values()))
    started = time.time()
    result, rows = measure(model, images)
    out = Path(args.out)
    result = {
        "model": model.identity(),
        "resolution": model.resolution,
        "held_out": list(HELD_OUT),
        "parameters": sum(p.numel() for p in model.unet.parameters()),
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        **result,
        "seconds": round(time.time() - started, 1),
    }
    write_grid(rows, out.with_name("samples_grid.png"))
    out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %s", out)
    if (out.parent / "train_log.json").exists():
        log.info("wrote %s", write_card(out.parent))


if __name__ == "__main__":
    main()
