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

An SDXL-shaped model (``LDM.is_sdxl``) has two text encoders; every function here takes the second
(``text_encoder_2``) beside the first, and the UNet call adds SDXL's pooled vector and size ids in
``LDM.predict``. LoRA on SDXL's UNet goes on the same projections: diffusers'
``examples/dreambooth/train_dreambooth_lora_sdxl.py`` (huggingface/diffusers at 58eb52c0) line 1225,
``unet_target_modules = ["to_k", "to_q", "to_v", "to_out.0"]``.
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


def encode_prompts(
    model, prompts: Sequence[str], *, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None
):
    """``τ(prompt)`` for each prompt through ``text_encoder`` (and SDXL's ``text_encoder_2``), gradients kept;
    the model's own where not given. ``(N, 77, D)`` token states, or a
    :class:`~cloakbench.core.ldm.TextConditioning` for SD 3 and SDXL (``LDM.condition``)."""
    return model.condition(
        list(prompts),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
    )


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
    text_encoder_2: Any = None,
    tokenizer_2: Any = None,
) -> torch.Tensor:
    """``len(prompts)`` images ``(N, 3, R, R)`` in ``[0, 1]``; image ``i`` from a CPU generator seeded ``seeds[i]``.

    CPU generators make the initial noise identical on every device, so two fine-tuned
    models (clean-trained and protected-trained) sampled with the same seeds start from the
    same noise. ``unet``/``text_encoder``/``tokenizer`` (and SDXL's ``text_encoder_2``/``tokenizer_2``)
    replace the model's own when given. SDXL samples with ``StableDiffusionXLPipeline``, SD 3 with
    ``StableDiffusion3Pipeline``, both fed the conditioning computed here (:func:`encode_prompts`).
    """
    from diffusers import StableDiffusionPipeline

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if model.is_flow or model.is_sdxl:
        encoders = dict(
            text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer_2
        )
        if model.is_sdxl:
            from diffusers import StableDiffusionXLPipeline

            replace = {key: value for key, value in encoders.items() if value is not None}
            pipe = StableDiffusionXLPipeline(**model.xl_pipeline_components(unet=unet, **replace))
        else:
            from diffusers import StableDiffusion3Pipeline

            components = model.flow_pipeline_components(transformer=unet)
            components.update(
                text_encoder=text_encoder if text_encoder is not None else model.text_encoder,
                tokenizer=tokenizer if tokenizer is not None else model.tokenizer,
            )
            pipe = StableDiffusion3Pipeline(**components)
        return _generate_from_conditioning(model, pipe, prompts, seeds, steps, guidance_scale, encoders)
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


def _generate_from_conditioning(model, pipe, prompts, seeds, steps, guidance_scale, encoders):
    """:func:`generate_images` through an SD 3 or SDXL pipeline fed the conditioning computed here, through the
    (possibly fine-tuned or token-extended) encoders; the negative branch as ``LDM.negative_conditioning``
    does it (the empty prompt, or zeros where the model sets ``force_zeros_for_empty_prompt``)."""
    from cloakbench.core.ldm import TextConditioning, conditioning_kwargs

    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def encode(texts):
        return encode_prompts(model, texts, **encoders)

    with torch.no_grad():
        conditional = encode(prompts)
        negative = None
        if guidance_scale > 1.0:
            if model.force_zeros_for_empty_prompt:
                negative = TextConditioning(torch.zeros_like(conditional.hidden), torch.zeros_like(conditional.pooled))
            else:
                negative = encode([""] * len(prompts))
        return pipe(
            **conditioning_kwargs(conditional, negative),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            height=model.resolution,
            width=model.resolution,
            output_type="pt",
        ).images.to(torch.float32)
