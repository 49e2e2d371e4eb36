"""The fine-tuning loop of the ``lora`` and ``dreambooth`` attacks: DreamBooth on the published set.

Ruiz et al., "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", CVPR 2023, arXiv 2208.12242, as Anti-DreamBooth (Van Le et al., "Anti-DreamBooth:
Protecting users from personalized text-to-image synthesis", ICCV 2023, arXiv 2303.15433) runs
it against protections: ``train_dreambooth.py`` and ``scripts/attack_with_aspl.sh`` lines 43–67
of VinAIResearch/Anti-DreamBooth (instance prompt ``"a photo of sks person"``, class prompt
``"a photo of person"``, prior preservation with 200 class images the base model generates,
λ = 1, batch 2, constant learning rate, AdamW with weight decay 1e-2, gradient norm clipped to
1, 1000 steps, inference prompts ``"a photo of sks person"`` and ``"a dslr portrait of sks
person"``).

Threat model: the mimic fine-tunes on all published images of one subject (``scope =
"set"``) and generates new ones. A protection works if the generations of the model
fine-tuned on the protected images are further from the concept (and from the generations
of the same recipe fine-tuned on the clean images, same seeds and prompts) than the clean
recipe's.

One training step (:func:`finetune`), per Anti-DreamBooth ``attacks/aspl.py`` lines 414–471::

    z = s·E(flip(x))  (a fresh posterior sample),  t ~ U{0..T−1},  ε ~ N(0, I)
    L = mean ‖ε − ε_θ(z_t, t, τ("a photo of sks <class>"))‖²
        + λ · mean ‖ε' − ε_θ(z'_t, t', τ("a photo of <class>"))‖²   (class images, prior preservation)
    θ ← AdamW(θ, clip_1(∇_θ L))

where θ is either the LoRA adapters (``lora``) or the whole UNet (``dreambooth``),
optionally with the text encoder. The shared model is never modified: both attacks train
deep copies. The loss maths is ``cloakbench.core.finetuning``, shared with the surrogate
of the protections ``fsmg`` and ``aspl``.

Deliberate differences from the reference, with reasons:

- Images are the harness's ``R × R`` images (already at the model's resolution), so there is
  no resize/centre crop; random horizontal flips are a setting (``flip_p``, default 0 as
  the Anti-DreamBooth scripts; Hönig et al.'s ``finetune.py`` line 37 flips).
- Class images are cached per run folder (``work/class-images-<hash>``), keyed by the model
  weights, prompt, count and sampler settings, so every cell of a run reuses them.
- Model-scaled defaults (``steps``, ``learning_rate``, ``num_class_images`` at 0): the
  reference's at ≥ 512² (Stable Diffusion), a smaller recipe on the tiny and toy models, so
  the attack learns visibly on a CPU in minutes (see each attack's docstring).
- Anti-DreamBooth's face metrics (FDFR, ISM) and BRISQUE of the generations are computed by the
  harness for every set attack (``bench/noreference.py``; FDFR and ISM for face subjects), on
  dlib's face models by default: RetinaFace/ArcFace weights do not install offline
  (docs/METRICS.md, "No-reference and face metrics").
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from cloakbench.core import finetuning
from cloakbench.core.config import bounded
from cloakbench.core.images import check_images, png_bytes, read_png
from cloakbench.mimicry.base import AttackContext, Mimicry
from cloakbench.mimicry.common import epoch_batches, note

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a DreamBooth fine-tune and of the generations after it.

    class_word: the subject's class (``<class>`` in the prompts); the reference's "person".
    instance_prompt / class_prompt: ``{}`` is the class word.
    prior_preservation: add DreamBooth's class loss (reference: on).
    num_class_images: class images the base model generates (0: 200 at ≥ 512², the
        reference's, else 8).
    prior_loss_weight: λ (reference 1).
    class_sample_steps: DDIM steps per class image (the reference pipeline's 50).
    steps: training steps (0: scaled to the model, see the attack).
    batch_size: instance images per step (reference 2); as many class images join it.
    learning_rate: AdamW's (0: scaled to the model, see the attack).
    weight_decay: AdamW's (reference 1e-2). max_grad_norm: clip (reference 1; 0 = none).
    flip_p: probability of a horizontal flip per sample (reference 0).
    k: generations; prompts: their prompts (cycled; ``{}`` is the class word);
    sample_steps, guidance_scale: the DDIM sampler of the generations (50, 7.5).
    """

    class_word: str = "person"
    instance_prompt: str = "a photo of sks {}"
    class_prompt: str = "a photo of {}"
    prior_preservation: bool = True
    num_class_images: int = bounded(0, 0, 10000)
    prior_loss_weight: float = bounded(1.0, 0.0, 100.0)
    class_sample_steps: int = bounded(50, 1, 1000)
    steps: int = bounded(0, 0, 1_000_000)
    batch_size: int = bounded(2, 1, 256)
    learning_rate: float = bounded(0.0, 0.0, 1.0)
    weight_decay: float = bounded(1e-2, 0.0, 1.0)
    max_grad_norm: float = bounded(1.0, 0.0, 1e6)
    flip_p: float = bounded(0.0, 0.0, 1.0)
    k: int = bounded(4, 1, 10000)
    prompts: tuple[str, ...] = ("a photo of sks {}", "a dslr portrait of sks {}")
    sample_steps: int = bounded(50, 1, 1000)
    guidance_scale: float = bounded(7.5, 0.0, 50.0)

    def __post_init__(self):
        for name in ("instance_prompt", "class_prompt"):
            if "{}" not in getattr(self, name):
                raise ValueError(f"{name} needs a '{{}}' for the class word; got {getattr(self, name)!r}")
        if not self.prompts or any("{}" not in p for p in self.prompts):
            raise ValueError(f"every generation prompt needs a '{{}}' for the class word; got {self.prompts}")


@dataclass
class FinetuneResult:
    """A fine-tuned private copy: the UNet, the text encoder(s) (copies when trained) and the losses."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    loss_trace: list[float]
    #: SDXL's second text encoder (a copy when trained; None for a one-encoder model).
    text_encoder_2: torch.nn.Module | None = None


def is_large(model) -> bool:
    """Stable Diffusion-sized models (≥ 512²) get the reference recipe; smaller ones the CPU recipe."""
    return model.resolution >= 512


def resolved_class_images(config: FinetuneConfig, model) -> int:
    if not config.prior_preservation:
        return 0
    if config.num_class_images > 0:
        return config.num_class_images
    return 200 if is_large(model) else 8


def class_images(model, config: FinetuneConfig, count: int, cache_root: Path | None) -> torch.Tensor:
    """``count`` images of ``class_prompt`` from the base model at seeds ``0..count−1``, cached as PNGs.

    The seeds are fixed (not drawn from the cell's generator) so every cell of a run, clean
    and protected, trains with the same class images; the cache key is the model's weights,
    the prompt, the count and the sampler settings.
    """
    prompt = config.class_prompt.format(config.class_word)
    key = hashlib.sha256(
        repr(
            (
                model.weights_hash,
                str(model.dtype),
                prompt,
                config.class_sample_steps,
                config.guidance_scale,
                model.resolution,
            )
        ).encode()
    ).hexdigest()[:16]
    folder = cache_root / f"class-images-{key}" if cache_root is not None else None
    images: list[torch.Tensor] = []
    if folder is not None and folder.is_dir():
        for index in range(count):
            path = folder / f"{index:05d}.png"
            if not path.is_file():
                break
            images.append(read_png(path))
    missing = list(range(len(images), count))
    if missing:
        log.info("generating %d class images of %r", len(missing), prompt)
    for start in range(0, len(missing), 4):  # batches of 4 bound the sampler's memory
        seeds = missing[start : start + 4]
        batch = finetuning.generate_images(
            model, [prompt] * len(seeds), seeds, steps=config.class_sample_steps, guidance_scale=config.guidance_scale
        ).cpu()
        for seed, image in zip(seeds, batch):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                temporary = folder / f".{seed:05d}.{os.getpid()}.png"
                temporary.write_bytes(png_bytes(image))
                os.replace(temporary, folder / f"{seed:05d}.png")  # atomic: a parallel worker sees whole files
                image = read_png(folder / f"{seed:05d}.png")  # train on what is cached, so reuse is identical
            images.append(image)
    if not images:
        return torch.empty(0, 3, model.resolution, model.resolution)
    return torch.stack(images)


def finetune(
    model,
    images: torch.Tensor,
    *,
    unet: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    train_text_encoder: bool,
    config: FinetuneConfig,
    steps: int,
    learning_rate: float,
    prior_images: torch.Tensor,
    generator: torch.Generator,
) -> FinetuneResult:
    """Train ``parameters`` (of ``unet``, a private copy) on ``images`` with the DreamBooth loss.

    ``train_text_encoder`` trains a deep copy of the text encoder too (its parameters join
    the optimiser; SDXL's two encoders both, as ``train_dreambooth_lora_sdxl.py`` trains both
    with ``--train_text_encoder``, lines 1236–1246). The VAE posterior of every image (and its mirror) is computed once; a
    fresh latent is sampled from it every step, as encoding each step would give.
    """
    from diffusers.utils.torch_utils import randn_tensor

    if steps < 1:
        raise ValueError(f"fine-tuning needs steps >= 1, got {steps}")
    device, dtype = model.device, model.dtype
    text_encoder, text_encoder_2 = model.text_encoder, model.text_encoder_2
    if train_text_encoder:
        text_encoder = copy.deepcopy(model.text_encoder).requires_grad_(True)
        parameters = list(parameters) + [p for p in text_encoder.parameters() if p.requires_grad]
        if text_encoder_2 is not None:
            text_encoder_2 = copy.deepcopy(text_encoder_2).requires_grad_(True)
            parameters += [p for p in text_encoder_2.parameters() if p.requires_grad]
    encoders = dict(text_encoder=text_encoder, text_encoder_2=text_encoder_2)
    optimizer = torch.optim.AdamW(
        parameters, lr=learning_rate, betas=(0.9, 0.999), weight_decay=config.weight_decay, eps=1e-8
    )
    instance_prompt = config.instance_prompt.format(config.class_word)
    class_prompt = config.class_prompt.format(config.class_word)
    with torch.no_grad():
        both = torch.cat([images, images.flip(-1)]).to(device, dtype)
        posterior = model.posterior(both)
        means, stds = posterior.mean, posterior.std
        use_prior = prior_images.shape[0] > 0
        if use_prior:
            prior = model.posterior(prior_images.to(device, dtype))
            prior_means, prior_stds = prior.mean, prior.std
    count, batch = images.shape[0], config.batch_size
    batches = epoch_batches(count, batch, steps, generator)
    prior_batches = epoch_batches(prior_images.shape[0], batch, steps, generator) if use_prior else None
    prompts = [instance_prompt] * batch + ([class_prompt] * batch if use_prior else [])
    if not train_text_encoder:
        with torch.no_grad():
            fixed_embeds = finetuning.encode_prompts(model, prompts, **encoders)
    loss_trace: list[float] = []
    for step in range(steps):
        flipped = (torch.rand(batch, generator=generator, device=generator.device) < config.flip_p).long().cpu()
        rows = (batches[step] + flipped * count).to(device)
        mean, std = means[rows], stds[rows]
        if use_prior:
            mean = torch.cat([mean, prior_means[prior_batches[step].to(device)]])
            std = torch.cat([std, prior_stds[prior_batches[step].to(device)]])
        latents = mean + std * randn_tensor(mean.shape, generator=generator, device=device, dtype=dtype)
        latents = model.scale_latents(latents)
        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
        timesteps = torch.randint(
            0, model.num_train_timesteps, (latents.shape[0],), generator=generator, device=generator.device
        ).to(device)
        embeds = finetuning.encode_prompts(model, prompts, **encoders) if train_text_encoder else fixed_embeds
        per_sample = finetuning.denoising_loss(model, unet, latents, timesteps, noise, embeds)
        loss = finetuning.prior_preserving_loss(per_sample, batch, config.prior_loss_weight)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_trace.append(float(loss.detach()))
    unet.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    if text_encoder_2 is not None:
        text_encoder_2.requires_grad_(False).eval()
    return FinetuneResult(unet, text_encoder, loss_trace, text_encoder_2)


class FinetuneAttack(Mimicry):
    """Base of ``lora`` and ``dreambooth``: fine-tune a private copy on the set, then generate ``k`` images."""

    scope = "set"
    Config = FinetuneConfig
    #: the reference recipe's training steps and learning rate at ≥ 512², and the CPU recipe below it
    LARGE: dict = {}
    SMALL: dict = {}

    def resolved(self, model) -> tuple[int, float]:
        """``(steps, learning_rate)`` after the model-scaled defaults."""
        recipe = self.LARGE if is_large(model) else self.SMALL
        steps = self.config.steps or recipe["steps"]
        learning_rate = self.config.learning_rate or recipe["learning_rate"]
        return steps, learning_rate

    def trainable_copy(self, model, generator: torch.Generator) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
        """A deep copy of the UNet and the parameters to train (the shared UNet is never touched)."""
        raise NotImplementedError

    def save(self, result: FinetuneResult, work_dir: Path) -> list[Path]:
        """Write what the mimic would keep (adapter or weights) into ``work_dir``; return the files."""
        return []

    def check_model(self, model) -> None:
        if model.text_encoder is None or model.tokenizer is None or model.conditioning_override is not None:
            raise ValueError(
                f"{self.name} needs a text-conditioned SD-style model with a text encoder and "
                f"tokenizer; model {model.name} has none"
            )

    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        check_images(images, self.name)
        self.check_model(model)
        config = self.config
        base_seed = int(torch.randint(0, 2**31 - 1 - config.k, (1,), generator=generator, device=generator.device))
        steps, learning_rate = self.resolved(model)
        work_dir = (
            Path(context.work_dir) if context.work_dir else Path(tempfile.mkdtemp(prefix=f"cloakbench-{self.name}-"))
        )
        if not context.work_dir:
            log.warning("%s: no context.work_dir; side files written to %s", self.name, work_dir)
        cache_root = work_dir.parent if context.work_dir else None
        prior = class_images(model, config, resolved_class_images(config, model), cache_root)
        unet, parameters = self.trainable_copy(model, generator)
        result = finetune(
            model,
            images,
            unet=unet,
            parameters=parameters,
            train_text_encoder=self.config_train_text_encoder(),
            config=config,
            steps=steps,
            learning_rate=learning_rate,
            prior_images=prior,
            generator=generator,
        )
        files = self.save(result, work_dir)
        prompts = [config.prompts[i % len(config.prompts)].format(config.class_word) for i in range(config.k)]
        seeds = [base_seed + i for i in range(config.k)]
        generations = finetuning.generate_images(
            model,
            prompts,
            seeds,
            steps=config.sample_steps,
            guidance_scale=config.guidance_scale,
            unet=result.unet,
            text_encoder=result.text_encoder,
            text_encoder_2=result.text_encoder_2,
        )
        context.notes["loss_trace"] = result.loss_trace
        for key, value in {
            "steps": steps,
            "learning_rate": learning_rate,
            "class_images": prior.shape[0],
            "files": [str(f) for f in files],
            "generation_prompts": prompts,
            "generation_seeds": seeds,
            "concept_images": images.shape[0],
        }.items():
            note(context, self.name, key, value)
        return generations.to(images.device)

    def config_train_text_encoder(self) -> bool:
        return bool(getattr(self.config, "train_text_encoder", False))
