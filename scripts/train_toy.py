"""Train the ``toy`` latent diffusion model on CPU and write it to ``models/toy``.

A latent diffusion model scaled down (High-Resolution Image Synthesis with Latent
Diffusion Models, Rombach et al., arXiv:2112.10752): an AutoencoderKL with downsampling
factor 8 and ``--latent-channels`` channels (16, the width of SD 3's autoencoder — Esser
et al., Scaling Rectified Flow Transformers, arXiv:2403.03206, §5.2.1, who found 16
channels reconstruct far better than SD 1.x's 4), a small CLIP text encoder over the
project's tokenizer, a cross-attention UNet trained for ε-prediction on SD's noise
schedule, and a ``2·C + 1``-channel inpainting UNet. Working resolution 128² (latent 16²).

Why 16 channels: toy v1/v2 used SD 1.x's 4 and reached 21 dB on the held-out round trip
(goal 25): 4 channels at 8× downsampling keep 48× fewer numbers than pixels. toy v3
starts from v2's trained VAE, widened without changing its output (``widen_vae``), and
trains on; ``--latent-channels 4`` without ``--vae-init`` trains the v1 shape from scratch.

Stages run in order and each is resumable from its checkpoint in ``--work``:

1. ``vae``: MSE + 0.1·L1 + 0.25·image-gradient L1 + a small KL weight (v1: L1 + L2 +
   0.5·gradient; v3 weights the MSE, which PSNR measures), on 64² patches cut from crops at
   several scales (the autoencoder is convolutional; patches are 4× cheaper).
2. ``latents``: encode a bank of 128² training crops to posterior means; the latent
   scaling factor is 1/std of those latents, as SD chose 0.18215.
3. ``unet``: the text encoder and the UNet, trained together, ε-prediction, 10 % empty
   captions (so classifier-free guidance has an unconditional branch).
4. ``inpaint``: a ``2·C + 1``-channel UNet initialised from the UNet (the ``C + 1`` extra input channels
   zero) and trained with random masks, as SD's inpainting model was.
5. ``export``: ``LDM.save_pretrained(models/toy)`` (safetensors), ``SHA256SUMS``, ``train_log.json``.

Usage: ``python scripts/train_toy.py [--budget-minutes 70] [--vae-steps N ...] [--threads 2]``.
Each stage stops at its step count or its share of the budget, whichever comes first
(``--stage-minutes unet=25`` overrides one stage's share).

``toy-b`` (a second denoiser on the *same* VAE, for transfer experiments, as SD 1.x
checkpoints share one autoencoder): ``--vae-from models/toy/vae`` skips the VAE stage and
uses that VAE and its ``scaling_factor`` unchanged; another ``--seed`` gives another UNet
and text-encoder initialisation, another latent bank (other crops) and another batch order::

    python scripts/train_toy.py --name toy-b --seed 1 --vae-from models/toy/vae \
        --stages latents,unet --stage-minutes latents=5,unet=25 --work /work/toywork/toy-b --out models/toy-b
    python scripts/train_toy.py --name toy-b --seed 1 --vae-from models/toy/vae --stages export \
        --work /work/toywork/toy-b --out models/toy-b

At export the VAE is read from ``--vae-from`` again (so toy-b ships the VAE toy ships at
that moment) after checking that its encoder is the one the latent bank was encoded with.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_files import write_sha256sums  # noqa: E402  (scripts/model_files.py)

from cloakbench.core.ldm import LDM, sd_noise_schedule  # noqa: E402
from cloakbench.core.provenance import sha256_file  # noqa: E402
from cloakbench.core.tokenizer import build_tokenizer  # noqa: E402
from cloakbench.core.toy_data import CropSampler, held_out_images, training_pictures  # noqa: E402

log = logging.getLogger("train_toy")

RESOLUTION = 128
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(16, 32, 64, 64),
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=RESOLUTION,
)
UNET_CONFIG = dict(
    sample_size=RESOLUTION // 8,
    layers_per_block=1,
    block_out_channels=(48, 64, 96),
    norm_num_groups=16,
    cross_attention_dim=64,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
TEXT_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=64,
)


def vae_config(args) -> dict:
    return {**VAE_CONFIG, "latent_channels": args.latent_channels}


def unet_config(args, inpaint: bool = False) -> dict:
    """The denoiser reads and predicts latents; SD's inpainting UNet also reads the mask
    and the masked image's latent (``2·C + 1`` input channels)."""
    channels = args.latent_channels
    return {**UNET_CONFIG, "in_channels": 2 * channels + 1 if inpaint else channels, "out_channels": channels}


# Share of --budget-minutes per stage: the VAE bounds every measured figure, so it gets most.
BUDGET_SHARES = {"vae": 0.50, "latents": 0.04, "unet": 0.34, "inpaint": 0.12}


# -- checkpoints --------------------------------------------------------------------
def save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict | None:
    # Our own work folder, and weights_only=True: tensors, dicts and numbers only.
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


class Logger:
    """Appends one JSON line per logged step to ``losses.jsonl`` in the work folder."""

    def __init__(self, work: Path):
        self.path = work / "losses.jsonl"

    def __call__(self, stage: str, step: int, **values) -> None:
        values = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in values.items()}
        record = {
            "stage": stage,
            "step": step,
            "time": round(time.time(), 1),
            **{k: round(float(v), 6) for k, v in values.items()},
        }
        values = {k: float(v) for k, v in values.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info("%s %d %s", stage, step, " ".join(f"{k}={float(v):.5f}" for k, v in values.items()))


def cosine_lr(step: int, total: int, base: float, warmup: int = 100, time_progress: float = 0.0) -> float:
    """Warm-up then cosine decay to 10 %; progress is by steps or by the stage's time budget,
    whichever is further, so a budget-limited stage still ends at a low learning rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


class Deadline:
    """A stage's share of the time budget; ``spent`` carries time used before a resume."""

    def __init__(self, minutes: float | None, spent: float = 0.0):
        self.seconds = minutes * 60 if minutes else None
        self.start = time.time() - spent

    def elapsed(self) -> float:
        return time.time() - self.start

    def progress(self) -> float:
        return self.elapsed() / self.seconds if self.seconds else 0.0

    def passed(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds


# -- stage 1: the autoencoder -------------------------------------------------------
def gradient_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients: keeps edges sharp without a pretrained perceptual net."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


def widen_vae(vae, folder: Path) -> None:
    """Start ``vae`` from a trained VAE with fewer latent channels, function-preserving.

    Every tensor of the same shape is copied. The latent-facing ones grow: the encoder's
    ``conv_out`` rows (means, then log-variances) and ``quant_conv`` keep the old channels
    first; the new channels' means start as the fresh initialisation (small, random) and
    their log-variances at the old channels' mean log-variance; ``post_quant_conv`` is the
    old map on the old channels and the identity on the new ones; the decoder's ``conv_in``
    reads the new channels through zero weights. So at step 0 the widened VAE decodes
    exactly what the old one did, and training adds detail through the new channels.
    """
    old = load_vae_folder(folder).state_dict()
    new = vae.state_dict()
    c_old = old["post_quant_conv.weight"].shape[0]
    c_new = new["post_quant_conv.weight"].shape[0]
    if c_new < c_old:
        raise SystemExit(f"--vae-init {folder}: it has {c_old} latent channels, more than the {c_new} asked for")
    rows = list(range(c_old)) + list(range(c_new, c_new + c_old))  # new positions of the old rows
    for key, tensor in old.items():
        target = new[key]
        if target.shape == tensor.shape:
            new[key] = tensor.clone()
        elif key.startswith("encoder.conv_out."):
            grown = target.clone()
            grown[rows] = tensor
            if key.endswith("bias"):
                grown[c_new + c_old :] = tensor[c_old:].mean()  # the old posterior's log-variance
            else:
                grown[c_new + c_old :] = 0.0
            new[key] = grown
        elif key.startswith("quant_conv."):
            grown = torch.zeros_like(target)
            if key.endswith("weight"):
                grown[:, :, 0, 0] = torch.eye(2 * c_new)
                grown[[[r] for r in rows], rows] = tensor
            else:
                grown[rows] = tensor
            new[key] = grown
        elif key.startswith("post_quant_conv."):
            grown = torch.zeros_like(target)
            if key.endswith("weight"):
                grown[:, :, 0, 0] = torch.eye(c_new)
                grown[:c_old, :c_old] = tensor
            else:
                grown[:c_old] = tensor
            new[key] = grown
        elif key == "decoder.conv_in.weight":
            grown = torch.zeros_like(target)
            grown[:, :c_old] = tensor
            new[key] = grown
        else:
            raise SystemExit(
                f"--vae-init {folder}: tensor {key} {tuple(tensor.shape)} does not fit {tuple(target.shape)}"
            )
    vae.load_state_dict(new)


def train_vae(args, work: Path, logger: Logger, sampler: CropSampler, held_out: torch.Tensor) -> None:
    from diffusers import AutoencoderKL

    path = work / "vae.pt"
    state = load_checkpoint(path)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**vae_config(args))
    init_sha256 = state.get("init_sha256") if state else None
    if state is None and args.vae_init:
        widen_vae(vae, Path(args.vae_init))
        init_sha256 = sha256_file(Path(args.vae_init) / "diffusion_pytorch_model.safetensors")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        sampler.generator.set_state(state["rng"])
        if state.get("done"):
            log.info("vae: done at step %d", step)
            return
    deadline = Deadline(args.stage_minutes("vae"), state.get("elapsed", 0.0) if state else 0.0)
    vae.train()
    started = time.time()
    while step < args.vae_steps and not deadline.passed():
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.vae_steps, args.vae_lr, time_progress=deadline.progress())
        batch, _ = sampler.sample(args.vae_batch, size=args.vae_patch)
        x = batch * 2 - 1
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample()).sample
        l1 = (y - x).abs().mean()
        l2 = (y - x).pow(2).mean()
        edge = gradient_loss(y, x)
        kl = posterior.kl().mean() / x[0].numel()  # per pixel, so the weight is resolution-free
        loss = l2 + args.vae_l1 * l1 + args.vae_edge * edge + args.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            values = dict(loss=loss, l1=l1, l2=l2, edge=edge, kl=kl, s_per_step=(time.time() - started) / 50)
            started = time.time()
            if step % 250 == 0:
                vae.eval()
                with torch.no_grad():
                    recon = vae.decode(vae.encode(held_out * 2 - 1).latent_dist.mean).sample
                values["held_out_psnr"] = psnr(((recon + 1) / 2).clamp(0, 1), held_out).mean()
                vae.train()
            logger("vae", step, **values)
        if step % 250 == 0:
            save_checkpoint(
                path,
                model=vae.state_dict(),
                optimizer=optimizer.state_dict(),
                step=step,
                rng=sampler.generator.get_state(),
                elapsed=deadline.elapsed(),
                init_sha256=init_sha256,
            )
    save_checkpoint(
        path,
        model=vae.state_dict(),
        optimizer=optimizer.state_dict(),
        step=step,
        rng=sampler.generator.get_state(),
        elapsed=deadline.elapsed(),
        done=True,
        init_sha256=init_sha256,
    )
    log.info("vae: finished at step %d", step)


def load_vae(work: Path, args):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**vae_config(args))
    vae.load_state_dict(load_checkpoint(work / "vae.pt")["model"])
    return vae.eval().requires_grad_(False)


def load_vae_folder(folder: Path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)
    return vae.eval().requires_grad_(False)


def adopt_vae(args, work: Path) -> None:
    """Stage 1 for a model that shares another's VAE: its weights become the finished VAE
    checkpoint, so the later stages (and a resume) read them like a trained one."""
    path = work / "vae.pt"
    if path.exists():
        return
    vae = load_vae_folder(Path(args.vae_from))
    save_checkpoint(
        path,
        model=vae.state_dict(),
        step=0,
        done=True,
        source=str(args.vae_from),
        scaling_factor=float(vae.config.scaling_factor),
    )
    log.info("vae: adopted %s (scaling_factor %.5f)", args.vae_from, vae.config.scaling_factor)


# -- stage 2: the latent bank and the scaling factor ---------------------------------
def encode_bank(args, work: Path, sampler: CropSampler) -> None:
    path = work / "latents.pt"
    if path.exists():
        return
    vae = load_vae(work, args)
    started = time.time()
    latents, captions = [], []
    with torch.no_grad():
        for _ in range(args.bank_size // 32):
            batch, caps = sampler.sample(32, size=RESOLUTION)
            latents.append(vae.encode(batch * 2 - 1).latent_dist.mean)
            captions += caps
    latents = torch.cat(latents)
    # SD picked 0.18215 so that scaled latents have unit variance; do the same here. A
    # shared VAE keeps its own factor: the same latent space must have the same scale.
    adopted = load_checkpoint(work / "vae.pt").get("scaling_factor")
    scaling = float(adopted) if adopted is not None else float(1.0 / latents.std())
    log.info("latent bank: %d crops, std %.4f -> scaling_factor %.5f", len(latents), latents.std(), scaling)
    save_checkpoint(path, latents=latents, captions=captions, scaling_factor=scaling, seconds=time.time() - started)


def save_vae_folder(args, work: Path, folder: Path) -> None:
    """The trained VAE with the latent bank's ``scaling_factor`` as a diffusers folder, so that
    work needing only the VAE (toy-b's denoiser, the decoder fine-tuning) can start before the
    export: ``--stages latents --save-vae DIR``."""
    vae = load_vae(work, args)
    vae.register_to_config(scaling_factor=load_checkpoint(work / "latents.pt")["scaling_factor"])
    vae.save_pretrained(folder, safe_serialization=True)
    log.info("saved the VAE to %s", folder)


# -- stage 3: text encoder + UNet -----------------------------------------------------
def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT_CONFIG,
        )
    )


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def train_unet(args, work: Path, logger: Logger, tokenizer, inpaint: bool) -> None:
    from diffusers import UNet2DConditionModel

    stage = "inpaint" if inpaint else "unet"
    path = work / f"{stage}.pt"
    state = load_checkpoint(path)
    total = args.inpaint_steps if inpaint else args.unet_steps
    if state is not None and state.get("done"):
        # A finished stage goes on only when asked for more than it had (a larger
        # --stage-minutes or step count): continuing a short run, e.g. toy-b's, on purpose.
        minutes = args.stage_minutes(stage)
        budget_left = minutes is None or state.get("elapsed", 0.0) < minutes * 60
        if state["step"] >= total or not budget_left:
            log.info("%s: done at step %d", stage, state["step"])
            return
        log.info("%s: continuing a finished stage from step %d", stage, state["step"])
    bank = load_checkpoint(work / "latents.pt")
    latents = bank["latents"] * bank["scaling_factor"]
    captions = bank["captions"]
    token_ids = tokenize(tokenizer, captions + [""])
    empty_ids, token_ids = token_ids[-1:], token_ids[:-1]
    scheduler = sd_noise_schedule()
    alphas = scheduler.alphas_cumprod
    generator = torch.Generator().manual_seed(args.seed + (2 if inpaint else 1))
    torch.manual_seed(args.seed + (2 if inpaint else 1))

    text_encoder = build_text_encoder(tokenizer)
    if inpaint:
        base = load_checkpoint(work / "unet.pt")
        text_encoder.load_state_dict(base["text_encoder"])
        text_encoder.requires_grad_(False).eval()
        unet = UNet2DConditionModel(**unet_config(args, inpaint=True))
        weights = dict(base["model"])
        conv = weights["conv_in.weight"]
        # SD-inpainting's recipe: the extra input channels (mask, masked-image latent) start
        # at zero, so the new UNet starts as exactly the text-to-image UNet.
        extra = args.latent_channels + 1
        weights["conv_in.weight"] = torch.cat([conv, torch.zeros(conv.shape[0], extra, *conv.shape[2:])], 1)
        unet.load_state_dict(weights)
        params = list(unet.parameters())
    else:
        unet = UNet2DConditionModel(**unet_config(args))
        params = list(unet.parameters()) + list(text_encoder.parameters())
    lr = args.inpaint_lr if inpaint else args.unet_lr
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    step = 0
    if state is not None:
        unet.load_state_dict(state["model"])
        if not inpaint:
            text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        generator.set_state(state["rng"])
    if inpaint:
        vae = load_vae(work, args)
        sampler_pictures = training_pictures()
        crop_sampler = CropSampler(sampler_pictures, RESOLUTION, generator=generator)
    unet.train()
    text_encoder.train(not inpaint)
    deadline = Deadline(args.stage_minutes(stage), state.get("elapsed", 0.0) if state else 0.0)
    started = time.time()
    batch = args.unet_batch
    while step < total and not deadline.passed():
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total, lr, time_progress=deadline.progress())
        if inpaint:
            # Fresh crops, so the masked-image latents are of the same picture.
            images, caps = crop_sampler.sample(batch, size=RESOLUTION)
            ids = tokenize(tokenizer, caps)
            masks = random_masks(batch, RESOLUTION, generator)
            with torch.no_grad():
                z0 = vae.encode(images * 2 - 1).latent_dist.mean * bank["scaling_factor"]
                # The diffusers inpainting pipeline zeroes the masked pixels in [-1, 1].
                masked = (images * 2 - 1) * (masks < 0.5)
                zm = vae.encode(masked).latent_dist.mean * bank["scaling_factor"]
            latent_mask = F.interpolate(masks, size=z0.shape[-2:])
        else:
            index = torch.randint(len(latents), (batch,), generator=generator)
            z0 = latents[index]
            flip = torch.rand(batch, generator=generator) < 0.5
            z0 = torch.where(flip[:, None, None, None], z0.flip(-1), z0)  # latent flips ≈ image flips
            ids = token_ids[index]
        drop = torch.rand(batch, generator=generator) < 0.1
        ids = torch.where(drop[:, None], empty_ids.expand_as(ids), ids)
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        if inpaint:
            zt = torch.cat([zt, latent_mask, zm], 1)
        if inpaint:
            with torch.no_grad():
                c = text_encoder(ids)[0]
        else:
            c = text_encoder(ids)[0]
        pred = unet(zt, t, encoder_hidden_states=c).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            logger(stage, step, loss=loss, s_per_step=(time.time() - started) / 50)
            started = time.time()
        if step % 250 == 0:
            save_checkpoint(
                path,
                model=unet.state_dict(),
                text_encoder=text_encoder.state_dict(),
                optimizer=optimizer.state_dict(),
                step=step,
                rng=generator.get_state(),
                elapsed=deadline.elapsed(),
            )
    save_checkpoint(
        path,
        model=unet.state_dict(),
        text_encoder=text_encoder.state_dict(),
        optimizer=optimizer.state_dict(),
        step=step,
        rng=generator.get_state(),
        elapsed=deadline.elapsed(),
        done=True,
    )
    log.info("%s: finished at step %d", stage, step)


def random_masks(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random rectangles (1 = repaint), 1/8 to 3/4 of each side, aligned to the latent grid."""
    masks = torch.zeros(batch, 1, size, size)
    cells = size // 8
    for i in range(batch):
        for _ in range(int(torch.randint(1, 3, (1,), generator=generator))):
            h = int(torch.randint(max(1, cells // 8), cells * 3 // 4 + 1, (1,), generator=generator))
            w = int(torch.randint(max(1, cells // 8), cells * 3 // 4 + 1, (1,), generator=generator))
            top = int(torch.randint(0, cells - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, cells - w + 1, (1,), generator=generator))
            masks[i, :, top * 8 : (top + h) * 8, left * 8 : (left + w) * 8] = 1.0
    return masks


# -- stage 5: export -----------------------------------------------------------------
def _portable(value):
    """Paths inside the repository are recorded relative to it, so the log names no machine."""
    try:
        return str(Path(value).resolve().relative_to(ROOT))
    except (TypeError, ValueError):
        return value


def export(args, work: Path, tokenizer) -> Path:
    from diffusers import UNet2DConditionModel

    bank = load_checkpoint(work / "latents.pt")
    vae = load_vae(work, args)
    if args.vae_from:
        # Ship the shared VAE as it is now (toy's decoder may have been fine-tuned since the
        # bank was encoded); only its encoder side must be the one the UNet learned from.
        shared = load_vae_folder(Path(args.vae_from))
        reference = vae.state_dict()
        for key, tensor in shared.state_dict().items():
            if key.startswith(("encoder.", "quant_conv.")) and not torch.equal(tensor, reference[key]):
                raise SystemExit(f"{args.vae_from}: encoder tensor {key} differs from the one the latents came from")
        vae = shared
    vae.register_to_config(scaling_factor=bank["scaling_factor"])
    unet_state = load_checkpoint(work / "unet.pt")
    unet = UNet2DConditionModel(**unet_config(args))
    unet.load_state_dict(unet_state["model"])
    text_encoder = build_text_encoder(tokenizer)
    text_encoder.load_state_dict(unet_state["text_encoder"])
    inpaint_state = load_checkpoint(work / "inpaint.pt")
    inpaint_unet = None
    if inpaint_state is not None:
        inpaint_unet = UNet2DConditionModel(**unet_config(args, inpaint=True))
        inpaint_unet.load_state_dict(inpaint_state["model"])
    bundle = LDM(
        name=args.name,
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=sd_noise_schedule(),
        device=torch.device("cpu"),
        dtype=torch.float32,
        weights_hash="",
        resolution=RESOLUTION,
        inpaint_unet=inpaint_unet,
        scaling_factor=bank["scaling_factor"],
    )
    out = Path(args.out)
    staging = Path(tempfile.mkdtemp(prefix=f"{args.name}-export-", dir=work))
    staging.chmod(0o755)
    bundle.save_pretrained(staging)
    for config_path in staging.glob("*/config.json"):
        # A VAE read with from_pretrained (--vae-from) records its source folder: ship no machine path.
        config = json.loads(config_path.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for keep in ("MODEL_CARD.md", "measurements.json", "measurements_grid.png", "textual_inversion_grid.png"):
        if (out / keep).exists():
            shutil.copy2(out / keep, staging / keep)
    steps = {
        "vae": load_checkpoint(work / "vae.pt")["step"],
        "unet": unet_state["step"],
        "inpaint": inpaint_state["step"] if inpaint_state is not None else None,
    }
    losses = work / "losses.jsonl"
    records = [json.loads(line) for line in losses.read_text().splitlines()] if losses.exists() else []
    (staging / "train_log.json").write_text(
        json.dumps(
            {
                "args": {k: _portable(v) for k, v in vars(args).items() if not callable(v)},
                "steps": steps,
                "unet_minutes": round(unet_state.get("elapsed", 0.0) / 60, 1),
                "latents_minutes": round(bank["seconds"] / 60, 1) if "seconds" in bank else None,
                "stage_minutes_spent": {
                    stage: round(load_checkpoint(work / f"{stage}.pt").get("elapsed", 0.0) / 60, 1)
                    for stage in ("vae", "unet", "inpaint")
                    if (work / f"{stage}.pt").exists()
                },
                "vae_init_sha256": load_checkpoint(work / "vae.pt").get("init_sha256"),
                "scaling_factor": bank["scaling_factor"],
                "vae_config": vae_config(args),
                "unet_config": unet_config(args),
                "text_config": TEXT_CONFIG,
                "losses": records,
            },
            indent=1,
            default=str,
        )
    )
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(out)
    weights = sorted(p for p in out.rglob("*.safetensors"))
    write_sha256sums(out, weights)
    log.info("exported %s (%s bytes of weights)", out, sum(p.stat().st_size for p in weights))
    return out


def parse_stage_minutes(text: str) -> dict[str, float]:
    """``--stage-minutes unet=55,vae=40`` -> ``{"unet": 55.0, "vae": 40.0}`` (the toy trainers' time caps)."""
    return {stage: float(minutes) for stage, minutes in (item.split("=") for item in text.split(",") if item)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "toy-train"))
    parser.add_argument("--out", default=str(ROOT / "models" / "toy"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="total wall-clock budget, split between stages (vae 50 %%, unet 34 %%, inpaint 12 %%)",
    )
    parser.add_argument("--stages", default="vae,latents,unet,inpaint,export")
    parser.add_argument("--name", default="toy", help="the model's name in its bundle")
    parser.add_argument(
        "--vae-from",
        default=None,
        help="a VAE folder to use as is (toy-b): skips the VAE stage, keeps its scaling_factor",
    )
    parser.add_argument(
        "--stage-minutes", default="", help="per-stage minutes overriding the budget's shares, e.g. unet=25,latents=5"
    )
    parser.add_argument(
        "--latent-channels",
        type=int,
        default=16,
        help="latent channels of the VAE (toy v1/v2: 4, as SD 1.x; v3: 16, as SD 3)",
    )
    parser.add_argument(
        "--vae-init",
        default=None,
        help="a trained VAE folder to widen to --latent-channels and train on (toy v3: toy v2's)",
    )
    parser.add_argument(
        "--save-vae", default=None, help="after the latents stage, write the VAE with its scaling_factor to this folder"
    )
    parser.add_argument("--vae-l1", type=float, default=0.1, help="weight of the L1 term (the MSE's is 1)")
    parser.add_argument("--vae-edge", type=float, default=0.25, help="weight of the image-gradient L1 term")
    parser.add_argument("--vae-steps", type=int, default=12000)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--vae-patch", type=int, default=64)
    parser.add_argument("--vae-lr", type=float, default=5e-4)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--bank-size", type=int, default=4096)
    parser.add_argument("--unet-steps", type=int, default=6000)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--inpaint-steps", type=int, default=1500)
    parser.add_argument("--inpaint-lr", type=float, default=3e-4)
    args = parser.parse_args(argv)
    fixed = parse_stage_minutes(args.stage_minutes)
    args.stage_minutes_fixed = fixed
    args.stage_minutes = lambda stage: (
        fixed.get(stage) or (args.budget_minutes * BUDGET_SHARES[stage] if args.budget_minutes else None)
    )
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logger = Logger(work)
    stages = args.stages.split(",")
    tokenizer = build_tokenizer(work / "tokenizer")
    pictures = training_pictures()
    sampler = CropSampler(pictures, RESOLUTION, generator=torch.Generator().manual_seed(args.seed))
    held_out = torch.stack(list(held_out_images(RESOLUTION).values()))
    if args.vae_from:
        adopt_vae(args, work)
    elif "vae" in stages:
        train_vae(args, work, logger, sampler, held_out)
    if "latents" in stages:
        encode_bank(args, work, sampler)
    if args.save_vae:
        save_vae_folder(args, work, Path(args.save_vae))
    if "unet" in stages:
        train_unet(args, work, logger, tokenizer, inpaint=False)
    if "inpaint" in stages:
        train_unet(args, work, logger, tokenizer, inpaint=True)
    if "export" in stages:
        export(args, work, tokenizer)


if __name__ == "__main__":
    main()
