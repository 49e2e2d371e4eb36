"""Train ``toy-flow``: toy's autoencoder with a rectified-flow transformer, and write ``models/toy-flow``.

The flow-matching family (Stable Diffusion 3 / FLUX class) scaled down. Esser et al., "Scaling
Rectified Flow Transformers for High-Resolution Image Synthesis", arXiv:2403.03206:

- **Path and target (§2, eq. 1–3; §3.1 "rectified flow")**: ``z_t = (1 − t)·z + t·ε`` with
  ``ε ~ N(0, I)``, ``t ∈ [0, 1]``; the network predicts the velocity ``v = ε − z`` and the loss
  is ``‖v_θ(z_t, t, c) − (ε − z)‖²`` (the ``rf`` objective).
- **Timestep sampling (§3.1, "Tailored SNR samplers", eq. 19)**: logit-normal, ``t = sigmoid(n)``,
  ``n ~ N(m, s²)`` with ``m = 0, s = 1`` (``rf/lognorm(0.00, 1.00)``, the paper's best in §5.1
  and SD 3's choice); the loss is not re-weighted (the density is the weighting), as diffusers'
  ``train_dreambooth_sd3.py`` does with ``--weighting_scheme logit_normal`` (its
  ``compute_density_for_timestep_sampling`` / ``compute_loss_weighting_for_sd3``: weight 1).
- **Timestep shift (§5.3.2, eq. 23)**: ``t_m = α·t_n / (1 + (α − 1)·t_n)`` with
  ``α = sqrt(m / n)`` relative to the 256² base resolution the authors trained at. toy-flow
  trains and works at 128² (a 16² latent, fewer tokens than the base's 32²), so ``α = 1`` in
  training and in its ``FlowMatchEulerDiscreteScheduler`` (``shift = 1.0``); SD 3 Medium ships
  ``shift = 3.0`` for 1024².
- **Latent normalisation**: SD 3's VAE has ``shift_factor`` and ``scaling_factor``; latents
  enter the transformer as ``(E(x) − shift)·scale``. Here ``shift`` is the mean and ``scale``
  ``1/std`` of the posterior means of a bank of training crops, as SD chose its factors.

Components (working size 128², latent 16×16×16):

- VAE: **toy's, unchanged** (``models/toy/vae``, read from there at load time, never copied:
  one file on disk). Its config keeps toy's ``scaling_factor``; toy-flow's own factors live in
  ``models/toy-flow/model_index.json`` and are applied by the bundle (``cloakbench.core.ldm``).
- Denoiser: ``SD3Transformer2DModel`` (MMDiT: joint attention between image patches and text
  tokens, adaLN-Zero conditioning on ``t`` and the pooled text embedding), patch 2, a few
  million parameters (:data:`TRANSFORMER_CONFIG`). Why SD 3's and not FLUX's: SD 3's MMDiT
  conditions on a pooled CLIP embedding and on CLIP token states — exactly what one small
  CLIP text encoder provides — while FLUX.1 needs a T5 encoder's token states, CLIP's pooled
  vector *and* a guidance-distillation embedding, and ships no img2img/inpaint pipeline that
  accepts precomputed embeddings without a T5 tokenizer.
- Text encoder: ``CLIPTextModelWithProjection`` (hidden 64, 3 layers, 32 tokens:
  :data:`TEXT_LENGTH`) over the project's tokenizer, trained jointly with the transformer; as in SD 3's pipeline the token states are
  the penultimate layer's (``hidden_states[-2]``) and the pooled vector is ``text_embeds``.
  10 % empty captions so classifier-free guidance has an unconditional branch.
- Scheduler: ``FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)``.
- Inpainting: no separate model: ``StableDiffusion3InpaintPipeline`` with a 16-channel
  transformer repaints by blending the re-noised known latents outside the mask at every step.

Stages, each resumable from its checkpoint in ``--work``:

1. ``latents``: encode a bank of 128² training crops with toy's VAE (posterior means); derive
   ``shift_factor`` and ``scaling_factor``.
2. ``transformer``: the transformer and text encoder, rectified-flow loss, AdamW, warm-up then
   cosine, stopping at ``--steps`` or ``--stage-minutes transformer=M``, whichever first.
3. ``export``: ``models/toy-flow`` (safetensors), ``SHA256SUMS``, ``train_log.json``.

Usage::

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/train_toy_flow.py --work /work/toywork/toy-flow \
        --stages latents,transformer --stage-minutes transformer=32 --batch 16 --threads 1
    python scripts/train_toy_flow.py --work /work/toywork/toy-flow --stages export

(what models/toy-flow was trained with; its MODEL_CARD.md gives the steps and minutes reached).
"""

from __future__ import annotations

import argparse
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

from model_files import write_sha256sums  # noqa: E402  (scripts/model_files.py)
from train_toy import (  # noqa: E402  (scripts/train_toy.py: the toy's shared training helpers)
    Deadline,
    Logger,
    _portable,
    cosine_lr,
    load_checkpoint,
    load_vae_folder,
    parse_stage_minutes,
    save_checkpoint,
    tokenize,
)

from cloakbench.core.provenance import sha256_file  # noqa: E402
from cloakbench.core.tokenizer import build_tokenizer  # noqa: E402
from cloakbench.core.toy_data import CropSampler, training_pictures  # noqa: E402

log = logging.getLogger("train_toy_flow")

RESOLUTION = 128
#: The VAE toy-flow shares with toy (read in place; relative to the repository root).
SHARED_VAE = "models/toy/vae"
TRANSFORMER_CONFIG = dict(
    sample_size=RESOLUTION // 8,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=4,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=64,
    caption_projection_dim=128,
    pooled_projection_dim=64,
    pos_embed_max_size=32,
)
TEXT_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=32,
    projection_dim=64,
)
#: Text length: SD 3 pads CLIP's tokens to 77; the toy's captions are at most 17 tokens of the
#: project's tokenizer and joint attention's cost grows with the number of text tokens, so 32.
TEXT_LENGTH = 32
#: Esser et al. §3.1: logit-normal location and scale (rf/lognorm(0.00, 1.00)).
LOGIT_MEAN, LOGIT_STD = 0.0, 1.0
SHIFT = 1.0


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT_CONFIG,
        )
    )


def text_conditioning(text_encoder, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SD 3's CLIP conditioning: penultimate token states and the projected pooled vector
    (diffusers ``StableDiffusion3Pipeline._get_clip_prompt_embeds``, ``clip_skip=None``)."""
    out = text_encoder(ids, output_hidden_states=True)
    return out.hidden_states[-2], out.text_embeds


def logit_normal_t(batch: int, generator: torch.Generator) -> torch.Tensor:
    """``t = sigmoid(n)``, ``n ~ N(m, s²)`` (Esser et al. eq. 19), shifted by ``SHIFT`` (eq. 23)."""
    t = torch.sigmoid(LOGIT_MEAN + LOGIT_STD * torch.randn(batch, generator=generator))
    return SHIFT * t / (1 + (SHIFT - 1) * t)


# -- stage 1: the latent bank and the factors ----------------------------------------
def encode_bank(args, work: Path, sampler: CropSampler) -> None:
    path = work / "latents.pt"
    if path.exists():
        return
    vae = load_vae_folder(ROOT / SHARED_VAE)
    started = time.time()
    latents, captions = [], []
    with torch.no_grad():
        for _ in range(args.bank_size // 32):
            batch, caps = sampler.sample(32, size=RESOLUTION)
            latents.append(vae.encode(batch * 2 - 1).latent_dist.mean)
            captions += caps
    latents = torch.cat(latents)
    shift = float(latents.mean())
    scaling = float(1.0 / (latents - shift).std())
    log.info("latent bank: %d crops, shift_factor %.5f, scaling_factor %.5f", len(latents), shift, scaling)
    save_checkpoint(
        path,
        latents=latents,
        captions=captions,
        shift_factor=shift,
        scaling_factor=scaling,
        seconds=time.time() - started,
        vae_sha256=sha256_file(ROOT / SHARED_VAE / "diffusion_pytorch_model.safetensors"),
    )


# -- stage 2: transformer + text encoder ----------------------------------------------
def train_transformer(args, work: Path, logger: Logger, tokenizer) -> None:
    from diffusers import SD3Transformer2DModel

    path = work / "transformer.pt"
    state = load_checkpoint(path)
    if state is not None and state.get("done"):
        minutes = args.stage_minutes.get("transformer")
        if state["step"] >= args.steps or minutes is None or state.get("elapsed", 0.0) >= minutes * 60:
            log.info("transformer: done at step %d", state["step"])
            return
        log.info("transformer: continuing a finished stage from step %d", state["step"])
    bank = load_checkpoint(work / "latents.pt")
    latents = (bank["latents"] - bank["shift_factor"]) * bank["scaling_factor"]
    token_ids = tokenize(tokenizer, bank["captions"] + [""])
    empty_ids, token_ids = token_ids[-1:], token_ids[:-1]
    generator = torch.Generator().manual_seed(args.seed + 1)
    torch.manual_seed(args.seed + 1)
    transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    text_encoder = build_text_encoder(tokenizer)
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step = 0
    if state is not None:
        transformer.load_state_dict(state["model"])
        text_encoder.load_state_dict(state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        generator.set_state(state["rng"])
    log.info(
        "transformer: %.2f M parameters, text encoder %.2f M",
        sum(p.numel() for p in transformer.parameters()) / 1e6,
        sum(p.numel() for p in text_encoder.parameters()) / 1e6,
    )
    transformer.train()
    text_encoder.train()
    deadline = Deadline(args.stage_minutes.get("transformer"), state.get("elapsed", 0.0) if state else 0.0)

    def checkpoint(done: bool = False) -> None:
        save_checkpoint(
            path,
            model=transformer.state_dict(),
            text_encoder=text_encoder.state_dict(),
            optimizer=optimizer.state_dict(),
            step=step,
            rng=generator.get_state(),
            elapsed=deadline.elapsed(),
            done=done,
            # What this stage was run with: the export's own command line is not the training's.
            train_args={
                "batch": args.batch,
                "lr": args.lr,
                "steps": args.steps,
                "seed": args.seed,
                "stage_minutes": args.stage_minutes,
            },
        )

    started = time.time()
    while step < args.steps and not deadline.passed():
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, time_progress=deadline.progress())
        index = torch.randint(len(latents), (args.batch,), generator=generator)
        z0 = latents[index]
        flip = torch.rand(args.batch, generator=generator) < 0.5
        z0 = torch.where(flip[:, None, None, None], z0.flip(-1), z0)  # latent flips ≈ image flips
        ids = token_ids[index]
        drop = torch.rand(args.batch, generator=generator) < 0.1
        ids = torch.where(drop[:, None], empty_ids.expand_as(ids), ids)
        noise = torch.randn(z0.shape, generator=generator)
        t = logit_normal_t(args.batch, generator)
        sigma = t.view(-1, 1, 1, 1)
        zt = (1 - sigma) * z0 + sigma * noise
        hidden, pooled = text_conditioning(text_encoder, ids)
        # The scheduler's timesteps are σ·1000 (FlowMatchEulerDiscreteScheduler), so is the input.
        pred = transformer(zt, encoder_hidden_states=hidden, pooled_projections=pooled, timestep=t * 1000).sample
        loss = F.mse_loss(pred, noise - z0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            logger(
                "transformer",
                step,
                loss=loss,
                lr=optimizer.param_groups[0]["lr"],
                s_per_step=(time.time() - started) / 50,
            )
            started = time.time()
        if step % 200 == 0:
            checkpoint()
    checkpoint(done=True)
    log.info("transformer: finished at step %d", step)


# -- stage 3: export -------------------------------------------------------------------
def export(args, work: Path, tokenizer) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    bank = load_checkpoint(work / "latents.pt")
    vae_file = ROOT / SHARED_VAE / "diffusion_pytorch_model.safetensors"
    if sha256_file(vae_file) != bank["vae_sha256"]:
        # Only the encoder matters to the latents, but a changed file means re-measuring anyway.
        raise SystemExit(f"{vae_file} changed since the latent bank was encoded; retrain from the latents stage")
    state = load_checkpoint(work / "transformer.pt")
    transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    transformer.load_state_dict(state["model"])
    text_encoder = build_text_encoder(tokenizer)
    text_encoder.load_state_dict(state["text_encoder"])
    out = Path(args.out)
    staging = Path(tempfile.mkdtemp(prefix="toy-flow-export-", dir=work))
    staging.chmod(0o755)
    transformer.save_pretrained(staging / "transformer", safe_serialization=True)
    text_encoder.save_pretrained(staging / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(staging / "tokenizer")
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SHIFT).save_pretrained(staging / "scheduler")
    (staging / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusion3Pipeline",
                "cloakbench_family": "flow-transformer",
                "cloakbench_resolution": RESOLUTION,
                "cloakbench_vae": "../toy/vae",
                "cloakbench_vae_sha256": bank["vae_sha256"],
                "shift_factor": bank["shift_factor"],
                "scaling_factor": bank["scaling_factor"],
            },
            indent=1,
        )
        + "\n"
    )
    for config_path in staging.glob("*/config.json"):
        config = json.loads(config_path.read_text())
        if config.pop("_name_or_path", None) is not None:
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for keep in ("MODEL_CARD.md", "measurements.json", "measurements_grid.png"):
        if (out / keep).exists():
            shutil.copy2(out / keep, staging / keep)
    losses = work / "losses.jsonl"
    records = [json.loads(line) for line in losses.read_text().splitlines()] if losses.exists() else []
    (staging / "train_log.json").write_text(
        json.dumps(
            {
                "args": {k: _portable(v) for k, v in {**vars(args), **state.get("train_args", {})}.items()},
                "steps": {"transformer": state["step"]},
                "stage_minutes_spent": {
                    "latents": round(bank["seconds"] / 60, 1),
                    "transformer": round(state.get("elapsed", 0.0) / 60, 1),
                },
                "shift_factor": bank["shift_factor"],
                "scaling_factor": bank["scaling_factor"],
                "parameters": {
                    "transformer": sum(p.numel() for p in transformer.parameters()),
                    "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
                },
                "transformer_config": TRANSFORMER_CONFIG,
                "text_config": TEXT_CONFIG,
                "logit_normal": [LOGIT_MEAN, LOGIT_STD],
                "shift": SHIFT,
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
    weights = sorted(out.rglob("*.safetensors"))
    write_sha256sums(out, weights)
    log.info("exported %s (%s bytes of weights)", out, sum(p.stat().st_size for p in weights))
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "toy-flow-train"))
    parser.add_argument("--out", default=str(ROOT / "models" / "toy-flow"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stages", default="latents,transformer,export")
    parser.add_argument("--stage-minutes", default="", help="e.g. transformer=55")
    parser.add_argument("--bank-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4)
    args = parser.parse_args(argv)
    args.stage_minutes = parse_stage_minutes(args.stage_minutes)
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
    tokenizer.model_max_length = TEXT_LENGTH
    sampler = CropSampler(training_pictures(), RESOLUTION, generator=torch.Generator().manual_seed(args.seed))
    if "latents" in stages:
        encode_bank(args, work, sampler)
    if "transformer" in stages:
        train_transformer(args, work, logger, tokenizer)
    if "export" in stages:
        export(args, work, tokenizer)


if __name__ == "__main__":
    main()
