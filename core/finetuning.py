"""The fine-tuning maths shared by the fine-tuning attacks and the surrogate protections.

Two layers fine-tune a latent diffusion model: the mimicry attacks ``lora`` and
``dreambooth`` (``mimicry/finetune.py``) and the surrogate models of the Anti-DreamBooth
protections ``fsmg`` and ``aspl`` (``protections/surrogate.py``). Methods may not import
each other (docs/ARCHITECTURE.md, layers), so what both compute lives here, once:

- :func:`denoising_loss`: the DreamBooth objective on one batch, the ε-prediction (or
  v-prediction) MSE of Ho et al. 2020 at ``t ~ U{0..T−1}``,
  ``L = ‖target − ε_θ(√ᾱ_t z + √(1−ᾱ_t) ε, t, τ(prompt))‖²`` with ``target = ε``
  (``v = √ᾱ_t ε − √(1−ᾱ_t) z`` for v-prediction models), as in Anti-DreamBooth's
  ``train_dreambooth.py`` and ``attacks/aspl.py`` lines 424–467 (VinAIResearch/Anti-DreamBooth);
- :func:`prior_preserving_loss`: DreamBooth's prior preservation (Ruiz et al., "DreamBooth",
  CVPR 2023, arXiv 2208.12242, Eq. 2): instance loss + ``λ`` · class loss, each a mean;
- :func:`add_lora`: LoRA adapters (Hu et al., arXiv 2106.09685) on the UNet's attention
  projections through ``peft``, as diffusers' ``examples/dreambooth/train_dreambooth_lora.py``;
- :func:`generate_images`: text-to-image sampling at fixed seeds (class images, generations);
- :func:`encode_prompts`: the text embedding through a (possibly fine-tuned) text encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: The UNet attention projections that get LoRA adapters (diffusers' DreamBooth-LoRA example and
#: Anti-DreamBooth ``attacks/aspl_lora.py`` lines 744–766: to_q, to_k, to_v, to_out[0]).
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict: ``ε``, or the velocity for v-prediction schedulers."""
    prediction = getattr(scheduler.config, "prediction_type", "epsilon")
    if prediction == "epsilon":
        return noise
    if prediction == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {prediction!r}: expected 'epsilon' or 'v_prediction'")


def denoising_loss(
    model, unet, latents: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, prompt_embeds: torch.Tensor
) -> torch.Tensor:
    """Per-sample denoising loss ``(N,)``: ``mean ‖target − unet(z_t, t, c)‖²`` over latent elements.

    ``latents`` are scaled latents ``z = s·(E(x) − b)``; ``z_t`` comes from the model's training
    schedule (``scheduler.add_noise``). Differentiable w.r.t. ``latents``, the UNet's
    trainable weights and ``prompt_embeds``. A flow model (``cloakbench.core.families``) gets
    its own path and target: ``z_t = (1 − σ_t) z + σ_t ε`` and ``‖v_θ − (ε − z)‖²`` (the
    flow-matching loss of Esser et al., arXiv 2403.03206, eq. 3), with ``unet`` its transformer.
    """
    if model.is_flow:
        noisy = model.add_noise(latents, timesteps, noise)
        predicted = model.predict(noisy, timesteps, prompt_embeds, unet=unet)
        target = model.prediction_target(latents, noise)
    else:
        noisy = model.scheduler.add_noise(latents, noise, timesteps)
        predicted = model.predict_noise(noisy, timesteps, prompt_embeds, unet=unet)
        target = training_target(model.scheduler, latents, noise, timesteps)
    return ((predicted.float() - target.float()) ** 2).flatten(1).mean(dim=1)


def prior_preserving_loss(per_sample: torch.Tensor, instance_count: int, prior_loss_weight: float) -> torch.Tensor:
    """DreamBooth's loss from per-sample losses: instances first, then class images.

    ``mean(instance) + λ · mean(class)`` (Anti-DreamBooth ``attacks/aspl.py`` lines 453–467);
    the plain mean when the batch holds no class image.
    """
    instance = per_sample[:instance_count].mean()
    if per_sample.shape[0] == instance_count:
        return instance
    return instance + prior_loss_weight * per_sample[instance_count:].mean()


def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str], device, dtype, *, flow: bool = False):
    """``τ(prompt)`` for each prompt, ``(N, 77, D)``, through ``text_encoder`` (gradients kept);
    with ``flow``, SD 3's :class:`~cloakbench.core.ldm.TextConditioning` (token states and pooled vector)."""
    from cloakbench.core.ldm import flow_text_conditioning

    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    if flow:
        return flow_text_conditioning(text_encoder, ids).to(dtype)
    return text_encoder(ids)[0].to(dtype)


def add_lora(unet, rank: int, *, generator: torch.Generator, alpha: float | None = None) -> list[torch.nn.Parameter]:
    """Add LoRA adapters of ``rank`` to ``unet``'s attention projections, in place; returns their parameters.

    ``lora_alpha = rank`` (scale 1), ``A ~ N(0, 1/rank²)`` and ``B = 0`` (so the adapted UNet
    starts equal to the base), peft's ``init_lora_weights="gaussian"`` as diffusers'
    DreamBooth-LoRA example uses it. ``A`` is drawn from ``generator`` (peft would draw from
    the global RNG, so two runs with the same seed would differ). Everything else stays frozen.
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=alpha if alpha is not None else rank,
            init_lora_weights=False,
            target_modules=list(LORA_TARGET_MODULES),
        )
    )
    parameters = []
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_A" in name:
                draw = torch.randn(parameter.shape, generator=generator, device=generator.device)
                parameter.copy_(draw.to(parameter.device, parameter.dtype) / rank)
            elif "lora_B" in name:
                parameter.zero_()
            if parameter.requires_grad:
                parameters.append(parameter)
    return parameters


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The adapter weights of a ``peft``-adapted UNet, in the layout ``pipeline.load_lora_weights`` reads."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def generate_images(
    model,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    guidance_scale: float,
    unet: Any = None,
    text_encoder: Any = None,
    tokenizer: Any = None,
) -> torch.Tensor:
    """``len(prompts)`` images ``(N, 3, R, R)`` in ``[0, 1]``; image ``i`` from a CPU generator seeded ``seeds[i]``.

    CPU generators make the initial noise identical on every device, so two fine-tuned
    models (clean-trained and protected-trained) sampled with the same seeds start from the
    same noise. ``unet``/``text_encoder``/``tokenizer`` replace the model's own when given.
    """
    from diffusers import StableDiffusionPipeline

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if model.is_flow:
        return _generate_flow_images(model, prompts, seeds, steps, guidance_scale, unet, text_encoder, tokenizer)
    components = model.pipeline_components(unet=unet)
    if text_encoder is not None:
        components["text_encoder"] = text_encoder
    if tokenizer is not None:
        components["tokenizer"] = tokenizer
    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    with torch.no_grad():
        return pipe(
            prompt=list(prompts),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            height=model.resolution,
            width=model.resolution,
            output_type="pt",
        ).images.to(torch.float32)


def _generate_flow_images(model, prompts, seeds, steps, guidance_scale, transformer, text_encoder, tokenizer):
    """:func:`generate_images` for a flow model: diffusers' ``StableDiffusion3Pipeline`` (Euler on the
    flow scheduler) with the conditioning computed here, through the (possibly fine-tuned) text encoder."""
    from diffusers import StableDiffusion3Pipeline

    components = model.flow_pipeline_components(transformer=transformer)
    text_encoder = text_encoder if text_encoder is not None else model.text_encoder
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    components.update(text_encoder=text_encoder, tokenizer=tokenizer)
    pipe = StableDiffusion3Pipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    with torch.no_grad():
        conditional = encode_prompts(tokenizer, text_encoder, prompts, model.device, model.dtype, flow=True)
        kwargs = {"prompt_embeds": conditional.hidden, "pooled_prompt_embeds": conditional.pooled}
        if guidance_scale > 1.0:
            empty = encode_prompts(tokenizer, text_encoder, [""] * len(prompts), model.device, model.dtype, flow=True)
            kwargs |= {"negative_prompt_embeds": empty.hidden, "negative_pooled_prompt_embeds": empty.pooled}
        return pipe(
            **kwargs,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            height=model.resolution,
            width=model.resolution,
            output_type="pt",
        ).images.to(torch.float32)
