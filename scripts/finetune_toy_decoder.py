"""Fine-tune only the decoder of the ``toy`` model's VAE (toy v2), keeping its encoder.

The toy's autoencoder bounds every figure measured on it: its round trip on the held-out
photos was 20.9 dB, and SDEdit decodes through the same decoder. Retraining the whole
chain would change the latent space, and with it invalidate the UNet, the inpainting UNet
and the text encoder trained on it (the two-stage design of latent diffusion: Rombach et
al., High-Resolution Image Synthesis with Latent Diffusion Models, arXiv:2112.10752,
where the denoiser is trained on a *frozen* first-stage encoder). Training the decoder
alone keeps ``E`` — and so every latent and every trained denoiser — bit for bit, while
``D`` learns to invert it better.

What is trained: ``post_quant_conv`` and ``decoder``. What is frozen: ``encoder`` and
``quant_conv`` (and the latent ``scaling_factor``). Inputs to the decoder are the
posterior *means*: the toy's posterior std is ~0.02 against a latent std of ~3.4 (KL
weight 1e-6), and the UNets were trained on means, so the decoder sees the latents it
will be asked to decode.

Loss: per-pixel MSE plus 0.1·L1. The targets are PSNRs (a function of the MSE alone);
the small L1 term keeps a gradient once errors are small. No perceptual or adversarial
term: none is available offline, and either would trade PSNR for texture.

Data: the toy's training pictures only (``cloakbench.core.toy_data``; the held-out
``samples`` are refused by ``training_pictures``), 128² crops at several scales with
flips, so the decoder sees whole working-size latents (16²) rather than patches with
borders. Held-out PSNR is logged for monitoring only; the last step is what ships (no
selection on the evaluation images).

Resumable: the checkpoint in ``--work`` holds the decoder, the optimiser, the sampler's
RNG state, the step and the time spent. Seeded (``--seed``). Stops at ``--steps`` or
``--minutes``, whichever comes first; the learning rate follows the further of the two.

Usage::

    python scripts/finetune_toy_decoder.py --init-vae models/toy/vae --work /work/toywork/decoder \
        --minutes 45 --threads 1            # train (resumes if the work folder has a checkpoint)
    python scripts/finetune_toy_decoder.py --work /work/toywork/decoder --export models/toy
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from model_files import write_sha256sums  # noqa: E402  (scripts/model_files.py)
from train_toy import Deadline, Logger, cosine_lr, load_checkpoint, psnr, save_checkpoint  # noqa: E402

from cloakbench.core.provenance import sha256_file  # noqa: E402
from cloakbench.core.toy_data import CropSampler, held_out_images, training_pictures  # noqa: E402

log = logging.getLogger("finetune_toy_decoder")

STAGE = "decoder"
FROZEN = ("encoder.", "quant_conv.")


def load_vae(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)


def trainable(vae) -> list[torch.nn.Parameter]:
    """Freeze the encoder side; return the decoder side's parameters."""
    params = []
    for name, param in vae.named_parameters():
        frozen = name.startswith(FROZEN)
        param.requires_grad_(not frozen)
        if not frozen:
            params.append(param)
    return params


def train(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    init = work / "init_vae"
    if not init.exists():
        # Keep the starting VAE beside the checkpoint: once v2 is exported over models/toy,
        # a resumed run must still start from (and freeze) the same encoder.
        staging = Path(tempfile.mkdtemp(prefix="init-", dir=work))
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            shutil.copy2(Path(args.init_vae) / name, staging / name)
        staging.replace(init)
    vae = load_vae(init)
    params = trainable(vae)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sampler = CropSampler(training_pictures(), args.size, generator=torch.Generator().manual_seed(args.seed))
    held_out = torch.stack(list(held_out_images(args.size).values()))
    logger = Logger(work)
    path = work / "decoder.pt"
    state = load_checkpoint(path)
    step = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["rng"])
        step = state["step"]
        if state.get("done"):
            log.info("decoder: done at step %d", step)
            return
        log.info("decoder: resuming at step %d", step)
    else:
        with torch.no_grad():
            start = vae.decode(vae.encode(held_out * 2 - 1).latent_dist.mean).sample
        logger(STAGE, 0, held_out_psnr=psnr(((start + 1) / 2).clamp(0, 1), held_out).mean())
    torch.manual_seed(args.seed)
    deadline = Deadline(args.minutes, state.get("elapsed", 0.0) if state else 0.0)
    vae.encoder.eval()  # frozen: no dropout, and its norms are GroupNorms (no running stats)
    vae.decoder.train()

    def checkpoint(done: bool = False) -> None:
        save_checkpoint(
            path,
            model=vae.state_dict(),
            optimizer=optimizer.state_dict(),
            step=step,
            rng=sampler.generator.get_state(),
            elapsed=deadline.elapsed(),
            done=done,
        )

    started = time.time()
    while step < args.steps and not deadline.passed():
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, warmup=args.warmup, time_progress=deadline.progress())
        images, _ = sampler.sample(args.batch, size=args.size)
        x = images * 2 - 1
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        l2 = (y - x).pow(2).mean()
        l1 = (y - x).abs().mean()
        loss = l2 + args.l1_weight * l1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            values = dict(
                loss=loss, l1=l1, l2=l2, lr=optimizer.param_groups[0]["lr"], s_per_step=(time.time() - started) / 50
            )
            if step % 250 == 0:
                vae.decoder.eval()
                with torch.no_grad():
                    recon = vae.decode(vae.encode(held_out * 2 - 1).latent_dist.mean).sample
                values["held_out_psnr"] = psnr(((recon + 1) / 2).clamp(0, 1), held_out).mean()
                vae.decoder.train()
            logger(STAGE, step, **values)
            started = time.time()
        if step % 250 == 0:
            checkpoint()
    checkpoint(done=True)
    log.info("decoder: finished at step %d (%.1f min)", step, deadline.elapsed() / 60)


def export(args) -> None:
    """Write the fine-tuned VAE over ``<out>/vae``, refresh ``SHA256SUMS`` and record the
    stage in ``train_log.json`` (the toy's own stages stay as they were)."""
    work, out = Path(args.work), Path(args.export)
    init = load_vae(work / "init_vae")
    state = load_checkpoint(work / "decoder.pt")
    if state is None or not state.get("done"):
        raise SystemExit(f"no finished decoder checkpoint in {work}; train first")
    vae = load_vae(work / "init_vae")
    vae.load_state_dict(state["model"])
    # The whole point: the encoder side must be the starting one, bit for bit.
    reference = init.state_dict()
    for name, tensor in vae.state_dict().items():
        if name.startswith(FROZEN) and not torch.equal(tensor, reference[name]):
            raise SystemExit(f"encoder tensor {name} changed; refusing to export")
    staging = Path(tempfile.mkdtemp(prefix="vae-", dir=work))
    vae.save_pretrained(staging, safe_serialization=True)
    # from_pretrained recorded the work folder as _name_or_path: the shipped config names no machine.
    config = json.loads((staging / "config.json").read_text())
    config.pop("_name_or_path", None)
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    target = out / "vae"
    old = out / ".vae-old"
    if old.exists():
        shutil.rmtree(old)
    target.replace(old)
    staging.chmod(0o755)
    staging.replace(target)
    shutil.rmtree(old)
    weights = sorted(p for p in out.rglob("*.safetensors"))
    write_sha256sums(out, weights)
    log_path = out / "train_log.json"
    train_log = json.loads(log_path.read_text())
    records = [json.loads(line) for line in (work / "losses.jsonl").read_text().splitlines()]
    train_log["decoder_finetune"] = {
        "command": args.command_line,
        "init_vae_sha256": sha256_file(work / "init_vae" / "diffusion_pytorch_model.safetensors"),
        "args": {k: v for k, v in vars(args).items() if k not in ("work", "export", "init_vae", "command_line")},
        "steps": state["step"],
        "minutes": round(state["elapsed"] / 60, 1),
        "trained": "decoder, post_quant_conv",
        "frozen": "encoder, quant_conv, scaling_factor",
        "losses": [r for r in records if r["stage"] == STAGE],
    }
    log_path.write_text(json.dumps(train_log, indent=1, default=str))
    log.info("exported %s (step %d)", target, state["step"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--init-vae",
        default=str(ROOT / "models" / "toy" / "vae"),
        help="the VAE to start from (copied into the work folder on the first run)",
    )
    parser.add_argument("--work", default="/work/toywork/decoder")
    parser.add_argument("--export", default=None, help="write the result into this LDM folder and stop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--l1-weight", type=float, default=0.1)
    args = parser.parse_args(argv)
    args.command_line = "python scripts/finetune_toy_decoder.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return args


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
