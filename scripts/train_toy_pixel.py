"""Train ``toy-pixel``: a small pixel-space DDPM for purification, and write ``models/toy-pixel``.

Pixel-space purifications — DiffPure (Nie et al., Diffusion Models for Adversarial
Purification, ICML 2022, arXiv:2205.07460), GrIDPure and PDM-Pure — noise an image to a
small ``t*`` with the forward process of a *pixel* diffusion model and denoise it back, so
the perturbation drowns in the noise and the denoiser's prior rebuilds the picture. The
toy LDM cannot do that (its VAE is the thing a protection attacks), hence this model.

The model is a diffusers ``UNet2DModel`` trained for ε-prediction (Ho et al., Denoising
Diffusion Probabilistic Models, arXiv:2006.11239) on DDPM's own linear β schedule
(1e-4 to 0.02, T = 1000; the schedule DiffPure's pixel models use) — not SD's
scaled-linear one, which is tuned for latents.

Working size 128² (the bench's), trained on 64² patches cut from the toy's 128²-scale
multi-scale crops. The UNet is fully convolutional (no attention), so a 64² patch of a
128²-scale picture has the statistics the model meets at 128²; one step costs a quarter
of a 128² step. Timesteps: half uniform over [0, T), half uniform over [0, 0.3·T): the
model is for purification, which starts at t* ≤ 0.3·T, and should still denoise from pure
noise (the sample grid). Exported weights are an EMA of the trained ones (as in Ho et
al.), whose decay warms up as min(0.995, (1 + n)/(10 + n)) because the run is short.

Data: the toy's training pictures only (``cloakbench.core.toy_data``); the held-out
``samples`` are refused by ``training_pictures``.

Resumable from ``--work`` (model, EMA, optimiser, RNG, step, time spent) and seeded.

Usage::

    python scripts/train_toy_pixel.py --work /work/toywork/pixel --minutes 35 --threads 1
    python scripts/train_toy_pixel.py --work /work/toywork/pixel --export models/toy-pixel
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from model_files import write_sha256sums  # noqa: E402  (scripts/model_files.py)
from train_toy import Deadline, Logger, cosine_lr, load_checkpoint, psnr, save_checkpoint  # noqa: E402

from cloakbench.core.toy_data import CropSampler, held_out_images, training_pictures  # noqa: E402

log = logging.getLogger("train_toy_pixel")

STAGE = "pixel"
RESOLUTION = 128
UNET_CONFIG = dict(
    sample_size=RESOLUTION,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(32, 64, 128, 128),
    norm_num_groups=8,
    add_attention=False,
    down_block_types=("DownBlock2D",) * 4,
    up_block_types=("UpBlock2D",) * 4,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=True,
    variance_type="fixed_small",
)
#: Share of timesteps drawn from [0, LOW_T·T) rather than [0, T).
LOW_SHARE, LOW_T = 0.5, 0.3


def build_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def sample_timesteps(batch: int, total: int, generator: torch.Generator) -> torch.Tensor:
    full = torch.randint(0, total, (batch,), generator=generator)
    low = torch.randint(0, int(LOW_T * total), (batch,), generator=generator)
    pick = torch.rand(batch, generator=generator) < LOW_SHARE
    return torch.where(pick, low, full)


@torch.no_grad()
def x0_psnr(unet, images: torch.Tensor, t: int, alphas: torch.Tensor, seed: int = 0) -> float:
    """Mean PSNR of the one-step x0 estimate from ``x_t`` (monitoring; seeded noise)."""
    x = images * 2 - 1
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    a = alphas[t]
    xt = a.sqrt() * x + (1 - a).sqrt() * noise
    eps = unet(xt, torch.full((len(x),), t)).sample
    x0 = ((xt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
    return float(psnr((x0 + 1) / 2, images).mean())


def train(args) -> None:
    from diffusers import UNet2DModel

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logger = Logger(work)
    path = work / "pixel.pt"
    state = load_checkpoint(path)
    torch.manual_seed(args.seed)
    unet = UNet2DModel(**UNET_CONFIG)
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    sampler = CropSampler(training_pictures(), RESOLUTION, generator=torch.Generator().manual_seed(args.seed))
    generator = torch.Generator().manual_seed(args.seed + 1)
    step = 0
    if state is not None:
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["rng"])
        generator.set_state(state["noise_rng"])
        step = state["step"]
        if state.get("done"):
            log.info("pixel: done at step %d", step)
            return
        log.info("pixel: resuming at step %d", step)
    alphas = build_scheduler().alphas_cumprod
    held_out = torch.stack(list(held_out_images(RESOLUTION).values()))
    deadline = Deadline(args.minutes, state.get("elapsed", 0.0) if state else 0.0)

    def checkpoint(done: bool = False) -> None:
        save_checkpoint(
            path,
            model=unet.state_dict(),
            ema=ema.state_dict(),
            optimizer=optimizer.state_dict(),
            step=step,
            rng=sampler.generator.get_state(),
            noise_rng=generator.get_state(),
            elapsed=deadline.elapsed(),
            done=done,
        )

    unet.train()
    started = time.time()
    while step < args.steps and not deadline.passed():
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, warmup=args.warmup, time_progress=deadline.progress())
        images, _ = sampler.sample(args.batch, size=args.patch)
        x0 = images * 2 - 1
        noise = torch.randn(x0.shape, generator=generator)
        t = sample_timesteps(args.batch, len(alphas), generator)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        if step % 50 == 0:
            values = dict(loss=loss, lr=optimizer.param_groups[0]["lr"], s_per_step=(time.time() - started) / 50)
            if step % 250 == 0:
                # Monitoring only (the last step ships): EMA x0-PSNR at t = 0.1·T on the held-out photos.
                values["held_out_x0_psnr_t100"] = x0_psnr(ema, held_out, 100, alphas)
            logger(STAGE, step, **values)
            started = time.time()
        if step % 250 == 0:
            checkpoint()
    checkpoint(done=True)
    log.info("pixel: finished at step %d (%.1f min)", step, deadline.elapsed() / 60)


def export(args) -> Path:
    from diffusers import UNet2DModel

    work, out = Path(args.work), Path(args.export)
    state = load_checkpoint(work / "pixel.pt")
    if state is None or not state.get("done"):
        raise SystemExit(f"no finished checkpoint in {work}; train first")
    unet = UNet2DModel(**UNET_CONFIG)
    unet.load_state_dict(state["ema"])
    staging = Path(tempfile.mkdtemp(prefix="pixel-export-", dir=work))
    staging.chmod(0o755)
    unet.save_pretrained(staging / "unet", safe_serialization=True)
    build_scheduler().save_pretrained(staging / "scheduler")
    # A DDPMPipeline index, so diffusers itself can also load the folder.
    (staging / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMPipeline",
                "unet": ["diffusers", "UNet2DModel"],
                "scheduler": ["diffusers", "DDPMScheduler"],
                "cloakbench_resolution": RESOLUTION,
                "cloakbench_prediction": "epsilon",
            },
            indent=1,
        )
        + "\n"
    )
    for keep in ("MODEL_CARD.md", "measurements.json", "samples_grid.png"):
        if (out / keep).exists():
            shutil.copy2(out / keep, staging / keep)
    losses = work / "losses.jsonl"
    records = [json.loads(line) for line in losses.read_text().splitlines()] if losses.exists() else []
    (staging / "train_log.json").write_text(
        json.dumps(
            {
                "command": args.train_command,
                "args": {k: v for k, v in vars(args).items() if k not in ("work", "export", "train_command")},
                "steps": state["step"],
                "minutes": round(state["elapsed"] / 60, 1),
                "unet_config": UNET_CONFIG,
                "scheduler_config": SCHEDULER_CONFIG,
                "timesteps": f"{LOW_SHARE:g} uniform on [0, {LOW_T:g}T), rest on [0, T)",
                "losses": [r for r in records if r["stage"] == STAGE],
            },
            indent=1,
            default=str,
        )
    )
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(out)
    weights = sorted(out.rglob("*.safetensors"))
    write_sha256sums(out, weights)
    log.info("exported %s (step %d)", out, state["step"])
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/work/toywork/pixel")
    parser.add_argument("--export", default=None, help="write models/toy-pixel from the finished checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=35.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument(
        "--train-command",
        default="python scripts/train_toy_pixel.py --work /work/toywork/pixel --minutes 35 --threads 1",
        help="recorded in train_log.json at export",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.export:
        export(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
