"""Textual inversion: learn a new word for the published image set, then generate with it.

Gal et al., "An Image is Worth One Word: Personalizing Text-to-Image Generation using
Textual Inversion", ICLR 2023 (arXiv 2208.01618), following the recipe of diffusers'
``examples/textual_inversion`` (one new token, only its embedding row trained, AdamW,
ε-prediction MSE at uniform random timesteps, random horizontal flips).

Threat model: the mimic trains a concept token on all published images of an artist
(``scope = "set"``) and generates new images with it; a protection works if generations
from the protected-trained token are worse (further from the concept) than from the
clean-trained one.

On SDXL (two text encoders) the token is learned as diffusers' ``examples/textual_inversion/
textual_inversion_sdxl.py`` (huggingface/diffusers at 58eb52c0) learns it: added to both tokenizers
(lines 676–682), a new row in both encoders' embedding matrices (703–713), both rows trained by one
AdamW (769–781) with every other row restored after each step (980–990), the UNet conditioned on
both encoders' penultimate states and the second's pooled vector with the size ids (933–955); the
second row is saved beside the first as ``learned_embeds_2.safetensors`` (1101–1112).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from cloakbench.core.config import bounded
from cloakbench.core.finetuning import generate_images
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry
from cloakbench.mimicry.common import epoch_batches, note
from cloakbench.mimicry.textual_inversion_templates import TEMPLATES

log = logging.getLogger(__name__)

EMBEDDING_FILE = "learned_embeds.safetensors"
#: SDXL's second encoder's row (textual_inversion_sdxl.py line 1111).
EMBEDDING_FILE_2 = "learned_embeds_2.safetensors"


@dataclass
class TrainedConcept:
    """The result of :func:`train_embedding`: private copies of tokenizer and text encoder."""

    token: str
    token_id: int
    tokenizer: Any
    text_encoder: Any
    loss_trace: list[float]
    #: SDXL's second tokenizer and encoder copies with the token's row (None for a one-encoder model).
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    token_id_2: int | None = None

    @property
    def embedding(self) -> torch.Tensor:
        """The learned row, ``(D,)`` float32 on the CPU."""
        return self.text_encoder.get_input_embeddings().weight[self.token_id].detach().float().cpu().clone()

    @property
    def embedding_2(self) -> torch.Tensor:
        """SDXL's second encoder's learned row, ``(D₂,)`` float32 on the CPU."""
        return self.text_encoder_2.get_input_embeddings().weight[self.token_id_2].detach().float().cpu().clone()

    def encoders(self, device=None, dtype=None) -> dict:
        """The concept's tokenizers and encoders as ``LDM.condition`` and ``generate_images`` take them."""
        parts = {"tokenizer": self.tokenizer, "text_encoder": self.text_encoder}
        if self.text_encoder_2 is not None:
            parts |= {"tokenizer_2": self.tokenizer_2, "text_encoder_2": self.text_encoder_2}
        if device is not None:
            parts = {k: v.to(device, dtype) if isinstance(v, torch.nn.Module) else v for k, v in parts.items()}
        return parts


def add_concept_token(model, token: str, initializer: str):
    """Copies of the model's tokenizer and text encoder with ``token`` added as one new row.

    The shared model is never touched. The new row starts at the mean embedding of the
    tokens of ``initializer`` (one token in CLIP's vocabulary for common words; several in
    the small vocabulary of the tiny and toy models). The embedding matrix is rebuilt from
    the old one plus that row, so no random initialisation (and no global RNG) is involved.
    Returns ``(tokenizer, text_encoder, token_id)``; the copy is float32 for training.
    """
    if model.text_encoder is None or model.tokenizer is None:
        raise ValueError(f"textual inversion needs a text encoder and tokenizer; model {model.name} has none")
    return extend_vocabulary(model.tokenizer, model.text_encoder, token, initializer)


def extend_vocabulary(base_tokenizer, base_text_encoder, token: str, initializer: str):
    """:func:`add_concept_token` on one tokenizer and encoder (SDXL's second gets its own row the same way)."""
    if token in base_tokenizer.get_vocab():
        raise ValueError(f"token {token!r} is already in the tokenizer's vocabulary; choose another concept token")
    tokenizer = copy.deepcopy(base_tokenizer)
    if tokenizer.add_tokens(token) != 1:
        raise ValueError(f"token {token!r} is already in the tokenizer's vocabulary; choose another concept token")
    token_id = tokenizer.convert_tokens_to_ids(token)
    init_ids = tokenizer(initializer, add_special_tokens=False).input_ids
    if not init_ids:
        raise ValueError(f"initializer {initializer!r} tokenizes to nothing")
    text_encoder = copy.deepcopy(base_text_encoder).to(torch.float32)
    old = text_encoder.get_input_embeddings().weight.detach()
    if token_id != old.shape[0]:
        raise ValueError(f"new token id {token_id} does not follow the embedding matrix ({old.shape[0]} rows)")
    row = old[init_ids].mean(dim=0, keepdim=True)
    embedding = torch.nn.Embedding.from_pretrained(torch.cat([old, row]), freeze=True)
    text_encoder.set_input_embeddings(embedding)
    text_encoder.config.vocab_size = old.shape[0] + 1
    return tokenizer, text_encoder, token_id


def train_embedding(
    model,
    images: torch.Tensor,
    *,
    token: str,
    initializer: str,
    templates: tuple[str, ...],
    steps: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    flip_p: float,
    generator: torch.Generator,
) -> TrainedConcept:
    """Train only the new token's embedding row on ``images`` (one concept).

    Loss: ``‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t, τ(prompt))‖²`` with ``t ~ U{0..T−1}``,
    ``z₀ ~ q(z|flip(x))`` and a random template filled with ``token`` (v-prediction models
    use the velocity target). After every optimiser step all other rows are copied back from
    the original matrix, so they stay bit-identical (AdamW's weight decay would move them).
    The VAE posterior of each image (and of its mirror image) is computed once; a fresh
    latent is sampled from it every step, as encoding each step would give.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"textual inversion needs steps >= 1 and batch_size >= 1, got {steps}, {batch_size}")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every training template needs a '{{}}' for the token; got {templates}")
    tokenizer, text_encoder, token_id = add_concept_token(model, token, initializer)
    concept = TrainedConcept(token, token_id, tokenizer, text_encoder, [])
    if model.is_sdxl:  # SDXL: a row in both encoders (textual_inversion_sdxl.py lines 676–713)
        concept.tokenizer_2, concept.text_encoder_2, concept.token_id_2 = extend_vocabulary(
            model.tokenizer_2, model.text_encoder_2, token, initializer
        )
    # (embedding matrix, its original, the rows that stay fixed) per encoder
    tables = []
    for encoder, row in ((text_encoder, token_id), (concept.text_encoder_2, concept.token_id_2)):
        if encoder is None:
            continue
        weight = encoder.get_input_embeddings().weight
        frozen = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
        frozen[row] = False
        weight.requires_grad_(True)
        tables.append((weight, weight.detach().clone(), frozen))
    optimizer = torch.optim.AdamW([t[0] for t in tables], lr=learning_rate, weight_decay=weight_decay)

    device, dtype = model.device, model.dtype
    with torch.no_grad():
        both = torch.cat([images, images.flip(-1)]).to(device, dtype)
        posterior = model.posterior(both)
        means, stds = posterior.mean, posterior.std
    count = images.shape[0]
    prediction = "flow" if model.is_flow else getattr(model.scheduler.config, "prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "flow"):
        raise ValueError(f"textual inversion: unsupported prediction type {prediction!r}")
    batches = epoch_batches(count, batch_size, steps, generator)
    loss_trace: list[float] = []
    from diffusers.utils.torch_utils import randn_tensor

    for step in range(steps):
        index = batches[step]
        flipped = (torch.rand(batch_size, generator=generator, device=generator.device) < flip_p).long().cpu()
        rows = (index + flipped * count).to(device)
        latents = means[rows] + stds[rows] * randn_tensor(
            means[rows].shape, generator=generator, device=device, dtype=dtype
        )
        latents = model.scale_latents(latents)
        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
        timesteps = torch.randint(
            0, model.num_train_timesteps, (batch_size,), generator=generator, device=generator.device
        ).to(device)
        # A flow model (SD 3 class) is trained on its own path and target: z_t = (1 − σ)z + σε, v = ε − z.
        if model.is_flow:
            noisy = model.add_noise(latents, timesteps, noise)
        else:
            noisy = model.scheduler.add_noise(latents, noise, timesteps)
        choice = torch.randint(0, len(templates), (batch_size,), generator=generator, device=generator.device).tolist()
        prompts = [templates[c].format(token) for c in choice]
        # The model's own conditioning through the concept's encoders: for SD 3 and SDXL the new token
        # reaches both the token states and the pooled vector (LDM.condition).
        conditioning = model.condition(prompts, **concept.encoders())
        prediction_out = model.predict(noisy, timesteps, conditioning)
        if model.is_flow:
            target = model.prediction_target(latents, noise)
        else:
            target = noise if prediction == "epsilon" else model.scheduler.get_velocity(latents, noise, timesteps)
        loss = torch.nn.functional.mse_loss(prediction_out.float(), target.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for weight, original, frozen in tables:
                weight[frozen] = original[frozen]
        loss_trace.append(float(loss.detach()))
    for weight, _, _ in tables:
        weight.requires_grad_(False)
    for encoder in (text_encoder, concept.text_encoder_2):
        if encoder is not None:
            encoder.requires_grad_(False).eval()
    concept.loss_trace = loss_trace
    return concept


def save_embedding(path: Path, token: str, vector: torch.Tensor) -> Path:
    """Write ``{token: (1, D)}`` as safetensors: the file ``pipe.load_textual_inversion`` reads."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: vector.detach().float().cpu().reshape(1, -1).contiguous()}, str(path))
    return path


def generate(
    pipe, prompts: list[str], seeds: list[int], *, steps: int, guidance_scale: float, resolution: int
) -> torch.Tensor:
    """``len(prompts)`` images, image ``i`` from a CPU generator seeded with ``seeds[i]``.

    CPU generators make the initial noise the same on every device, so the generations of
    the clean-trained and protected-trained tokens start from identical noise.
    """
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    return pipe(
        prompt=list(prompts),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generators,
        height=resolution,
        width=resolution,
        output_type="pt",
    ).images.to(torch.float32)


def concept_pipeline(model, concept: TrainedConcept):
    """A text-to-image pipeline over the model's UNet/VAE with the concept's private text encoder."""
    from diffusers import StableDiffusionPipeline

    components = model.pipeline_components()
    components.update(tokenizer=concept.tokenizer, text_encoder=concept.text_encoder.to(model.device, model.dtype))
    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@MIMICRY.register("textual-inversion")
class TextualInversion(Mimicry):
    """Textual inversion (Gal et al., arXiv 2208.01618): learn one token on the image set, generate K images.

    All images of the call form one concept. One new token (``token``, default
    ``<concept>``) is added to private copies of the tokenizer and text encoder — the shared
    model is never modified — and only its embedding row is trained (every other row is
    restored after each step and stays bit-identical). The row is saved as
    ``context.work_dir/learned_embeds.safetensors`` (``{token: (1, D)}``, loadable with
    ``pipe.load_textual_inversion(path, token=...)``), then ``k`` images are generated with
    ``prompts`` (cycled) from seeds ``base + i``, where ``base`` is drawn from the generator
    first, so a clean run and a protected run with the same seed start from the same noise.
    Returns ``(k, 3, R, R)`` in ``[0, 1]`` at the model's resolution ``R``.

    Recipe (diffusers' textual inversion example): AdamW (weight decay 1e-2), learning rate
    5e-4 × batch (``scale_lr``), 3000 steps at 512² on a GPU, random flips, ε-MSE, each
    example's prompt a random template of ``imagenet_templates_small`` or, with
    ``learnable_property`` "style", ``imagenet_style_templates_small``
    (examples/textual_inversion/textual_inversion.py:454-505, 544; the lists are in
    ``mimicry/textual_inversion_templates.py``). Up to version 1 seven templates of this
    project's own were used.
    Defaults here: ``learning_rate`` 5e-4 (multiplied by ``batch_size`` 4), ``steps`` 0 =
    scaled to the model: 3000 (the recipe) when the model works at ≥ 512², else 200 (the
    tiny and toy models on a CPU; tiny-random at 64² trains and generates 4 images in about
    20 s on a busy 2-core CPU). ``k`` 4,
    ``sample_steps`` 50, ``guidance_scale`` 7.5, ``initializer`` "painting". The loss of
    every step is in ``context.notes["loss_trace"]``; the rest (steps, file, prompts, seeds)
    in ``context.notes["textual-inversion"]``.
    """

    version = 2
    # --quick: a few training steps and two small generations
    QUICK = {"steps": 10, "k": 2, "sample_steps": 5}
    scope = "set"

    @dataclass(frozen=True)
    class Config:
        token: str = "<concept>"
        initializer: str = "painting"
        steps: int = bounded(0, 0, 1_000_000)  # 0: the reference's default for the model
        batch_size: int = bounded(4, 1, 4096)
        learning_rate: float = bounded(5e-4, 0, 1, low_open=True)
        scale_lr: bool = True
        weight_decay: float = bounded(1e-2, 0, 1)
        flip_p: float = bounded(0.5, 0, 1)
        #: Which of diffusers' template lists trains the token (``--learnable_property``, default "object").
        learnable_property: Literal["object", "style"] = "object"
        #: Empty: the list ``learnable_property`` names; otherwise these templates (an explicit choice).
        templates: tuple[str, ...] = ()
        k: int = bounded(4, 1, 1000)
        prompts: tuple[str, ...] = ("a photo of {}", "a painting of {}", "a picture of {}", "an image of {}")
        sample_steps: int = bounded(50, 1, 10_000)
        guidance_scale: float = bounded(7.5, 0, 100)

    def training_templates(self) -> tuple[str, ...]:
        """``templates`` when given, else diffusers' object or style list (textual_inversion_templates.py)."""
        return tuple(self.config.templates) or TEMPLATES[self.config.learnable_property]

    def resolved_steps(self, model) -> int:
        if self.config.steps > 0:
            return self.config.steps
        return 3000 if model.resolution >= 512 else 200

    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        check_images(images, self.name)
        config = self.config
        if config.k < 1 or not config.prompts:
            raise ValueError(f"{self.name}: k must be >= 1 and prompts non-empty")
        if any("{}" not in p for p in config.prompts):
            raise ValueError(f"{self.name}: every generation prompt needs a '{{}}' for the token; got {config.prompts}")
        base_seed = int(torch.randint(0, 2**31 - 1 - config.k, (1,), generator=generator, device=generator.device))
        steps = self.resolved_steps(model)
        learning_rate = config.learning_rate * (config.batch_size if config.scale_lr else 1)
        concept = train_embedding(
            model,
            images,
            token=config.token,
            initializer=config.initializer,
            templates=self.training_templates(),
            steps=steps,
            batch_size=config.batch_size,
            learning_rate=learning_rate,
            weight_decay=config.weight_decay,
            flip_p=config.flip_p,
            generator=generator,
        )
        work_dir = Path(context.work_dir) if context.work_dir else Path(tempfile.mkdtemp(prefix="cloakbench-ti-"))
        if not context.work_dir:
            log.warning("textual-inversion: no context.work_dir; embedding written to %s", work_dir)
        path = save_embedding(work_dir / EMBEDDING_FILE, config.token, concept.embedding)
        if concept.text_encoder_2 is not None:
            save_embedding(work_dir / EMBEDDING_FILE_2, config.token, concept.embedding_2)
        prompts = [config.prompts[i % len(config.prompts)].format(config.token) for i in range(config.k)]
        seeds = [base_seed + i for i in range(config.k)]
        with torch.no_grad():
            if model.is_flow or model.is_sdxl:  # SD 3's or SDXL's pipeline with the concept's private encoders
                generations = generate_images(
                    model,
                    prompts,
                    seeds,
                    steps=config.sample_steps,
                    guidance_scale=config.guidance_scale,
                    **concept.encoders(model.device, model.dtype),
                )
            else:
                generations = generate(
                    concept_pipeline(model, concept),
                    prompts,
                    seeds,
                    steps=config.sample_steps,
                    guidance_scale=config.guidance_scale,
                    resolution=model.resolution,
                )
        context.notes["loss_trace"] = concept.loss_trace
        for key, value in {
            "steps": steps,
            "learning_rate": learning_rate,
            "token": config.token,
            "embedding_path": str(path),
            "generation_prompts": prompts,
            "generation_seeds": seeds,
            "concept_images": images.shape[0],
            "templates": "custom" if config.templates else config.learnable_property,
        }.items():
            note(context, self.name, key, value)
        return generations.to(images.device)
