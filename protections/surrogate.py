"""The surrogate model of the Anti-DreamBooth protections: a private DreamBooth fine-tune.

Van Le et al., "Anti-DreamBooth: Protecting users from personalized text-to-image
synthesis", ICCV 2023, arXiv 2303.15433. FSMG (``protections/fsmg.py``) and ASPL
(``protections/aspl.py``) perturb images against a *surrogate*: a copy of the model
fine-tuned with DreamBooth on the subject's images. This module is that surrogate: deep
copies of the UNet (and text encoder), trained with the DreamBooth loss of
``cloakbench.core.finetuning`` (the same maths as the ``lora``/``dreambooth`` attacks), and
the per-image denoising loss the PGD step ascends. The shared model is never modified.

Training step, as ``train_one_epoch`` in ``attacks/aspl.py`` lines 375–483 of
VinAIResearch/Anti-DreamBooth: one instance image (round robin over the set) and one class
image per step (FSMG: two of each, its ``train_dreambooth.py`` batch), ``z = s·E(x)`` a posterior sample, ``t ~ U{0..T−1}``, ``ε ~ N(0, I)``,
``L = mse(ε_θ(z_t, t, τ(instance prompt)), ε) + λ · mse(ε_θ(z'_t, t', τ(class prompt)), ε')``,
AdamW (β 0.9/0.999, weight decay 1e-2, ε 1e-8), UNet and text
encoder trained (``--train_text_encoder``). A fresh optimiser per :meth:`Surrogate.train`
call, as the reference builds one per ``train_one_epoch``.

On a flow-matching model (SD 3 class) the surrogate is the transformer (and its CLIP text
encoder), and both the DreamBooth loss and the loss the PGD step ascends are the flow-matching
loss ``mse(v_θ((1 − σ_t) z + σ_t ε, t, c), ε − z)`` (``core/finetuning.py``, ``denoising_loss``),
``t`` uniform over the flow scheduler's grid as diffusers' ``train_dreambooth_lora_sd3.py``
draws it with its default weighting (``protections/sds.py`` derives the residual).

LoRA variant (``lora_rank > 0``): the reference's ``attacks/aspl_lora.py`` (lines 736–770)
for GPUs where a full fine-tune runs out of memory: rank-``r`` adapters on the UNet's
attention projections, the text encoder frozen (the reference can add text-encoder adapters;
omitted here to keep one adapter site).

Deliberate differences (docs/PROTECTIONS.md, "Anti-DreamBooth as the authors ran it"), each
reproduced by ASPL's ``surrogate_profile = "reference"`` (:meth:`Surrogate.of`'s
``reference_quirks``) where it changes results:

- clipping: the gradient norm is clipped to 1. ``train_one_epoch`` *means* to
  (``aspl.py:470``) but passes ``params_to_optimize``, an ``itertools.chain`` that building the
  optimiser already consumed (line 387): ``clip_grad_norm_`` sees no parameter, a no-op. The
  reference profile does not clip (``max_grad_norm`` 0).
- precision: the surrogate trains in the model's dtype. The reference casts the UNet, text
  encoder and VAE to bf16 (``aspl.py:407-412``) and trains them so, AdamW state included (no
  fp32 master weights): at lr 5e-7 an update of ~5e-7 per weight is below half a bf16 ulp of
  almost every weight, so ~0.5 % of them change at all. The reference profile keeps the
  surrogate's copies in bf16 (:attr:`Surrogate.weight_dtype`); the losses are taken in fp32 as
  the reference's ``.float()`` (lines 455-463). The shared VAE is not cast: its latents are.
- data order: the round robin goes on across calls, so every image and class image is used.
  The reference builds a fresh dataset every call and reads ``train_dataset[step %
  len(train_dataset)]`` (``aspl.py:418``; ``len`` = max(class, instance images), lines 51, 58;
  instance ``index % n``, class ``index % n_class``, lines 77, 88): with 3 steps per call only
  instance images 0–2 and class images 0–2 are ever drawn. The reference profile restarts so
  (:attr:`Surrogate.restart_each_call`).

FSMG's surrogate is trained by diffusers' ``train_dreambooth.py``, where none of these occur:
the clipped parameters are a fresh chain (``train_dreambooth.py:987-992``), accelerate's bf16
mixed precision keeps fp32 weights (lines 804-808, 860-862), and the data loader cycles every
class image (lines 446, 795-799).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace

import torch

from cloakbench.core import finetuning
from cloakbench.core.config import bounded
from cloakbench.protections.engine import PGDConfig, PGDProtection, PGDState, StepDraws

log = logging.getLogger(__name__)

#: The square size at which a reference set's content hash is taken (its identity).
REFERENCE_READ_SIZE = 512
_CLASS_IMAGES: dict[tuple, torch.Tensor] = {}  # generated class images, per model and prompt, once per process


def class_images(model, prompt: str, count: int, *, steps: int, guidance_scale: float = 7.5) -> torch.Tensor:
    """``count`` images of ``prompt`` from the base model at seeds ``0..count−1`` (memoised per process)."""
    if count == 0:
        return torch.empty(0, 3, model.resolution, model.resolution)
    key = (model.weights_hash, str(model.dtype), str(model.device), prompt, count, steps, guidance_scale)
    if key not in _CLASS_IMAGES:
        log.info("generating %d class images of %r for the surrogate", count, prompt)
        batches = [
            finetuning.generate_images(
                model, [prompt] * len(seeds), seeds, steps=steps, guidance_scale=guidance_scale
            ).cpu()
            for seeds in (list(range(s, min(s + 4, count))) for s in range(0, count, 4))
        ]
        _CLASS_IMAGES[key] = torch.cat(batches)
    return _CLASS_IMAGES[key]


@dataclass
class Surrogate:
    """A private fine-tunable copy of the model's UNet and text encoder.

    ``unet``/``text_encoder`` are deep copies (the shared model is untouched);
    ``parameters`` what :meth:`train` updates; ``cursor`` the round-robin position.
    """

    model: object
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    parameters: list[torch.nn.Parameter]
    instance_prompt: str
    class_prompt: str
    learning_rate: float
    prior_loss_weight: float = 1.0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    #: Instance images per step (each with one class image): 1 in ASPL's train_one_epoch, 2 in FSMG's
    #: ``train_dreambooth.py --train_batch_size=2`` with prior preservation (collate_fn: 2 + 2).
    instance_batch: int = 1
    #: dtype of the surrogate's weights, inputs and optimiser state (None: the model's). ASPL's reference: bf16.
    weight_dtype: torch.dtype | None = None
    #: Every :meth:`train` call reads images from index 0, as ``aspl.py:418`` does (else the round robin goes on).
    restart_each_call: bool = False
    cursor: int = 0
    loss_trace: list[float] = field(default_factory=list)
    #: SDXL's second text encoder copy (None for a one-encoder model).
    text_encoder_2: torch.nn.Module | None = None

    @classmethod
    def of(
        cls,
        model,
        *,
        instance_prompt: str,
        class_prompt: str,
        learning_rate: float,
        train_text_encoder: bool,
        generator: torch.Generator,
        lora_rank: int = 0,
        reference_quirks: bool = False,
        **settings,
    ) -> Surrogate:
        """A surrogate starting from the model's weights: full fine-tune, or LoRA with ``lora_rank > 0``.

        ``reference_quirks``: train as ``train_one_epoch`` of ``attacks/aspl.py`` does (module
        docstring): no clipping, bf16 weights, data restarting at index 0 every call; with
        ``lora_rank > 0`` as ``attacks/aspl_lora.py`` does, which clips for real (lines 496-500).
        """
        if reference_quirks:
            settings = {**settings, "weight_dtype": torch.bfloat16, "restart_each_call": True}
            if lora_rank == 0:  # aspl_lora.py:496-500 clips a fresh chain: its clipping is real
                settings["max_grad_norm"] = 0.0
        if model.text_encoder is None or model.tokenizer is None or model.conditioning_override is not None:
            raise ValueError(f"the surrogate needs a text-conditioned SD-style model; model {model.name} has none")
        unet = copy.deepcopy(model.unet)
        text_encoder = copy.deepcopy(model.text_encoder)
        # SDXL's second encoder is a copy too, trained beside the first (None for a one-encoder model).
        text_encoder_2 = copy.deepcopy(model.text_encoder_2)
        encoders = [e for e in (text_encoder, text_encoder_2) if e is not None]
        if lora_rank > 0:
            parameters = finetuning.add_lora(unet, lora_rank, generator=generator)
            for encoder in encoders:
                encoder.requires_grad_(False)
        else:
            unet.requires_grad_(True)
            parameters = list(unet.parameters())
            if train_text_encoder:
                for encoder in encoders:
                    encoder.requires_grad_(True)
                    parameters += list(encoder.parameters())
        if settings.get("weight_dtype") is not None:  # aspl.py:411-412 (aspl_lora.py:433-434, adapters too)
            # torch's Module.to: in place, so ``parameters`` stay these modules' weights (diffusers' override
            # only adds a warning about modules to keep in fp32, of which an SD UNet has none).
            for module in (unet, *encoders):
                torch.nn.Module.to(module, settings["weight_dtype"])
        return cls(
            model,
            unet,
            text_encoder,
            parameters,
            instance_prompt,
            class_prompt,
            learning_rate,
            text_encoder_2=text_encoder_2,
            **settings,
        )

    def clone(self) -> Surrogate:
        """``f' = f.clone()`` (ASPL): independent copies of the weights, same settings and cursor."""
        unet, text_encoder = copy.deepcopy(self.unet), copy.deepcopy(self.text_encoder)
        text_encoder_2 = copy.deepcopy(self.text_encoder_2)
        modules = [m for m in (unet, text_encoder, text_encoder_2) if m is not None]
        # deepcopy keeps requires_grad, so the copies' trainable parameters are exactly the originals'
        parameters = [p for m in modules for p in m.parameters() if p.requires_grad]
        return replace(
            self,
            unet=unet,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            parameters=parameters,
            loss_trace=[],
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the surrogate computes in: its weights' (``weight_dtype``), else the model's."""
        return self.weight_dtype or self.model.dtype

    def prompt_embeds(self, prompt: str, batch: int) -> torch.Tensor:
        model = self.model
        # In the surrogate's dtype: the bf16 reference profile's UNet takes bf16 states (aspl.py:411-412).
        return finetuning.encode_prompts(model, [prompt] * batch, **self.encoders).to(self.dtype)

    @property
    def encoders(self) -> dict:
        """The surrogate's text encoder copies, as :func:`finetuning.encode_prompts` takes them."""
        return {"text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}

    def denoising_loss(self, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per image ``(N,)``: ``mean ‖ε − ε_θ'(z_t, t, τ'(instance prompt))‖²`` with the surrogate's θ', τ'."""
        embeds = self.prompt_embeds(self.instance_prompt, latents.shape[0])
        # In the surrogate's dtype (the reference's PGD runs its bf16 models, aspl.py:500-505); the loss in fp32.
        latents, noise = latents.to(self.dtype), noise.to(self.dtype)
        return finetuning.denoising_loss(self.model, self.unet, latents, timesteps, noise, embeds)

    def train(
        self, images: torch.Tensor, steps: int, generator: torch.Generator, prior_images: torch.Tensor
    ) -> list[float]:
        """``steps`` DreamBooth steps on ``images`` ``(N, 3, H, W)`` in ``[0, 1]``; returns the losses."""
        from diffusers.utils.torch_utils import randn_tensor

        if steps <= 0:
            return []
        model = self.model
        device, dtype = model.device, self.dtype
        optimizer = torch.optim.AdamW(
            self.parameters, lr=self.learning_rate, betas=(0.9, 0.999), weight_decay=self.weight_decay, eps=1e-8
        )
        losses = []
        count = self.instance_batch
        for step in range(steps):
            instance_indices, class_indices = self.batch_indices(step, images.shape[0], prior_images.shape[0])
            batch = images[instance_indices]
            prompts = [self.instance_prompt] * count
            if prior_images.shape[0] > 0:
                # Instances first, then as many class images (train_dreambooth.py collate_fn:493-506).
                batch = torch.cat([batch, prior_images[class_indices]])
                prompts += [self.class_prompt] * count
            with torch.no_grad():  # the shared VAE in the model's dtype; its latents in the surrogate's
                posterior = model.posterior(batch.detach().to(device, model.dtype))
            latents = posterior.mean + posterior.std * randn_tensor(
                posterior.mean.shape, generator=generator, device=device, dtype=model.dtype
            )
            latents = model.scale_latents(latents).to(dtype)
            noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=dtype)
            timesteps = torch.randint(
                0, model.num_train_timesteps, (latents.shape[0],), generator=generator, device=generator.device
            ).to(device)
            embeds = finetuning.encode_prompts(model, prompts, **self.encoders).to(dtype)
            per_sample = finetuning.denoising_loss(model, self.unet, latents, timesteps, noise, embeds)
            loss = finetuning.prior_preserving_loss(per_sample, count, self.prior_loss_weight)
            loss.backward()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        self.loss_trace += losses
        return losses

    def batch_indices(self, step: int, instances: int, class_images: int) -> tuple[list[int], list[int]]:
        """Instance and class-image indices of step ``step`` of a :meth:`train` call (advances ``cursor``).

        Default: the round robin goes on across calls. ``restart_each_call``: the reference's
        ``train_dataset[step % len(train_dataset)]`` on a fresh dataset (``aspl.py:418``), ``len``
        = max(instances, class images) (lines 51, 58), instance ``index % n``, class
        ``index % n_class`` (lines 77, 88).
        """
        count = self.instance_batch
        if self.restart_each_call:
            length = max(instances, class_images)
            positions = [(step * count + k) % length for k in range(count)]
        else:
            positions = [self.cursor + k for k in range(count)]
            self.cursor += count
        return [i % instances for i in positions], [i % max(class_images, 1) for i in positions]


# -- the protections' shared part ------------------------------------------------------------


@dataclass(frozen=True)
class SurrogatePGDConfig(PGDConfig):
    """Settings of FSMG and ASPL: the PGD budget and the surrogate's DreamBooth fine-tune.

    Budget, from ``scripts/attack_with_aspl.sh`` lines 35–36 (and ``attack_with_fsmg.sh``
    lines 55–56) of VinAIResearch/Anti-DreamBooth, stated on the model's ``[−1, 1]`` scale
    there and converted to this project's 8-bit units of ``[0, 1]`` images (× 255/2):
    ``pgd_eps`` 5e-2 → ``eps`` 6.375 (effective 6/255 after 8-bit rounding), ``pgd_alpha``
    5e-3 → ``alpha`` 0.6375. random_start: off (the reference starts from the clean image).
    latent: "sample" (the reference's ``latent_dist.sample()``).

    instance_prompt: the instance prompt of the surrogate and of the PGD loss ("a photo of sks
        person", ``--instance_prompt``). Not called ``prompt`` on purpose: ``bench compare``
        conditions a ``prompt`` setting on each image's caption, and the reference keeps its
        "sks" identifier whatever the images show.
    class_prompt: the prior-preservation prompt ("a photo of person").
    prior_preservation / num_class_images: class images of the base model (reference: on,
        200; 0 = 200 at ≥ 512², else 4). prior_loss_weight: λ (1). class_sample_steps: 50.
    learning_rate: the surrogate's AdamW rate (0: 5e-7 at ≥ 512², the reference's with the
        text encoder trained; 5e-4 for a LoRA surrogate, ``train_dreambooth_lora.py`` line 308;
        1e-4 on the tiny and toy models, where 5e-7 would leave the surrogate unchanged).
    train_text_encoder: train the text encoder copy too (reference: on).
    lora_rank: 0 = full fine-tune (the reference); r > 0 = a LoRA surrogate of rank r
        (``attacks/aspl_lora.py``, default rank 4).
    reference_set: the reference clean set the surrogate trains on (Anti-DreamBooth's set A;
        ``protections/reference_set.py``): a folder, manifest CSV or files. "" = the images being
        protected, with a row note saying so. Identified by its content hash, never its path.
    surrogate_batch: instance images per surrogate step, each paired with a class image (ASPL 1:
        ``attacks/aspl.py:418-421`` stacks one of each; FSMG 2: ``attack_with_fsmg.sh:22``).
    """

    eps: float = bounded(6.375, 0.0, 255.0)
    alpha: float = bounded(0.6375, 0.0, 255.0, low_open=True)
    random_start: bool = False
    instance_prompt: str = "a photo of sks person"
    class_prompt: str = "a photo of person"
    prior_preservation: bool = True
    num_class_images: int = bounded(0, 0, 10000)
    prior_loss_weight: float = bounded(1.0, 0.0, 100.0)
    class_sample_steps: int = bounded(50, 1, 1000)
    learning_rate: float = bounded(0.0, 0.0, 1.0)
    train_text_encoder: bool = True
    lora_rank: int = bounded(0, 0, 1024)
    surrogate_batch: int = bounded(1, 1, 64)
    reference_set: str = ""


class SurrogateProtection(PGDProtection):
    """Base of FSMG and ASPL: PGD that *ascends* a surrogate's denoising loss on the images.

    Direction (per image, ``t`` and ``ε`` drawn by the engine)::

        z = s·E(x),  L(x) = mean ‖ε − ε_θ'(√ᾱ_t z + √(1−ᾱ_t) ε, t, τ'(prompt))‖²
        x ← clip_[0,1](Π_eps(x + alpha · sign(∇_x L)))

    with θ', τ' the surrogate's weights (``state.surrogate``). The surrogate is trained on
    the whole batch, so unlike the other PGD protections an image's perturbation depends on
    the other images of the call (the reference protects a set).
    """

    Config = SurrogatePGDConfig
    needs = frozenset({"diffusion_noise"})
    # The surrogate trains on the whole batch: an image's perturbation depends on the others.
    learns_from_batch = True
    # bench perf times PGD steps only; its untimed prepare need not generate 200 class images or
    # fine-tune FSMG's surrogate 1000 steps (bench/perf/worker.py reads this). An ASPL step at a
    # round's start also trains f', and the round's last one f: any max_adv_train_steps consecutive
    # steps hold one of each, so s/step × 6 is one ASPL round (``bench perf --steps 6``).
    PERF_SETUP = {"num_class_images": 1, "class_sample_steps": 1}

    def resolved_learning_rate(self, model) -> float:
        if self.config.learning_rate > 0:
            return self.config.learning_rate
        if model.resolution >= 512:
            return 5e-4 if self.config.lora_rank > 0 else 5e-7
        return 1e-4

    def resolved_class_images(self, model) -> int:
        if not self.config.prior_preservation:
            return 0
        return self.config.num_class_images or (200 if model.resolution >= 512 else 4)

    def start_surrogate(self, state: PGDState) -> None:
        """Build the surrogate, its class images and its training generator into ``state``."""
        config, model = self.config, state.model
        # One training stream for the set, derived from every image's generator (its first draw).
        seed = sum(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in state.generators)
        state.training_generator = torch.Generator(device=model.device).manual_seed(seed % 2**62)
        prior = class_images(
            model, config.class_prompt, self.resolved_class_images(model), steps=config.class_sample_steps
        )
        size = tuple(state.clean.shape[-2:])
        if prior.shape[0] and tuple(prior.shape[-2:]) != size:
            # The images may be protected at their own size (bench protect at full size); the class
            # images are resized to it, as the reference resizes every training image to --resolution.
            prior = torch.nn.functional.interpolate(
                prior, size=size, mode="bicubic", antialias=True, align_corners=False
            ).clamp(0.0, 1.0)
        state.prior_images = prior
        reference = self.reference_images(max(size))
        state.reference_set = reference
        if reference is None:
            state.surrogate_images = state.clean
        else:
            state.surrogate_images = (
                torch.nn.functional.interpolate(
                    reference.images, size=size, mode="bicubic", antialias=True, align_corners=False
                )
                .clamp(0.0, 1.0)
                .to(state.clean.device, state.clean.dtype)
            )
        state.surrogate = Surrogate.of(
            model,
            instance_prompt=config.instance_prompt,
            class_prompt=config.class_prompt,
            learning_rate=self.resolved_learning_rate(model),
            train_text_encoder=config.train_text_encoder,
            generator=state.training_generator,
            lora_rank=config.lora_rank,
            reference_quirks=self.reference_quirks(),
            prior_loss_weight=config.prior_loss_weight,
            instance_batch=config.surrogate_batch,
        )

    def reference_quirks(self) -> bool:
        """Whether the surrogate trains with the reference code's quirks (module docstring).

        False here: FSMG's reference trains its surrogate with ``train_dreambooth.py``, which has
        none of them. ASPL answers its ``surrogate_profile`` setting.
        """
        return False

    def surrogate_for_step(self, state: PGDState) -> Surrogate:
        return state.surrogate

    def reference_images(self, size: int = 0):
        """The reference clean set (:class:`~cloakbench.protections.reference_set.ReferenceSet`) or ``None``."""
        from cloakbench.protections.reference_set import load_reference_set

        source = self.config.reference_set.strip()
        if not source:
            return None
        # Training reads it at the protected images' size (start_surrogate); the identity's content
        # hash at a fixed canonical size, so it does not depend on which images it protects.
        return load_reference_set(source, size or REFERENCE_READ_SIZE)

    def row_note(self) -> str:
        """What the surrogate trained on, for the protect row's ``note`` (docs/PROTECTIONS.md, "Reference set")."""
        from cloakbench.protections.reference_set import describe

        return describe(self.reference_images())

    def identity(self) -> dict:
        """The config with ``reference_set`` replaced by the set's content hash (never its path)."""
        identity = super().identity()
        reference = self.reference_images()
        identity["config"] = {**identity["config"], "reference_set": reference.content_hash if reference else ""}
        return identity

    def direction(self, state: PGDState, adversarial: torch.Tensor, draws: StepDraws):
        latents = self.image_latent(state, adversarial, draws)  # z = s·E(x)
        loss = self.surrogate_for_step(state).denoising_loss(latents, draws.timesteps, draws.noise)
        # Summing is exact per image: image i's loss depends on image i only (the reference's batch
        # mean has the same sign per pixel).
        return self.input_gradient(state, adversarial, loss.sum()), loss.detach()  # ascend L
