"""Inpainting: repaint a masked region of the published image and keep the rest.

Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022
(arXiv 2112.10752) — the 9-input-channel inpainting UNet (SD 1.5 inpainting for real runs;
the tiny and toy models ship one). PhotoGuard (Salman et al., "Raising the Cost of
Malicious AI-Powered Image Editing", arXiv 2302.06588) and Xue et al. (arXiv 2311.12832)
attack with it.

Threat model: the mimic keeps part of the protected image (say, a face) and lets the model
repaint the rest with a prompt; a protection works if the repainted result is worse for the
protected image than for the clean one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry
from cloakbench.mimicry.common import note

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".jpg", ".jpeg")


# -- masks: (N, 1, H, W) float, 1 = repaint, 0 = keep (diffusers' convention) ---------------
def center_box_mask(batch: int, height: int, width: int, fraction: float, device=None) -> torch.Tensor:
    """Repaint a centred box whose sides are ``fraction`` of the image's sides."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"box fraction must be in (0, 1], got {fraction}")
    box_h, box_w = round(height * fraction), round(width * fraction)
    top, left = (height - box_h) // 2, (width - box_w) // 2
    mask = torch.zeros(batch, 1, height, width, device=device)
    mask[:, :, top : top + box_h, left : left + box_w] = 1.0
    return mask


def background_mask(batch: int, height: int, width: int, axes: tuple[float, float], device=None) -> torch.Tensor:
    """Repaint everything but a centred ellipse (the reference's portrait setting).

    ``axes`` are the ellipse's full width and height as fractions of the image's.
    """
    fraction_w, fraction_h = axes
    if not (0.0 < fraction_w <= 1.0 and 0.0 < fraction_h <= 1.0):
        raise ValueError(f"ellipse axes must be fractions in (0, 1], got {axes}")
    # Pixel centres, so the ellipse is symmetric for even and odd sizes.
    rows = (torch.arange(height, dtype=torch.float32, device=device) + 0.5 - height / 2) / (fraction_h * height / 2)
    cols = (torch.arange(width, dtype=torch.float32, device=device) + 0.5 - width / 2) / (fraction_w * width / 2)
    inside = rows[:, None] ** 2 + cols[None, :] ** 2 <= 1.0
    return (~inside).to(torch.float32).expand(batch, 1, height, width).clone()


def find_mask_files(mask_dir: Path, image_names: list[str]) -> list[Path]:
    """The mask file of each image: same stem, any of ``.png/.jpg/.jpeg`` (case-insensitive)."""
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"mask folder {mask_dir} does not exist or is not a folder")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(mask_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in MASK_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
    found = []
    for name in image_names:
        stem = Path(name).stem
        candidates = by_stem.get(stem, [])
        if not candidates:
            raise FileNotFoundError(
                f"no mask for image {name!r} in mask folder {mask_dir} (looked for {stem}"
                f"{{{','.join(MASK_SUFFIXES)}}}); masks there: {', '.join(sorted(by_stem)) or 'none'}"
            )
        if len(candidates) > 1:
            raise ValueError(
                f"image {name!r} has several masks in {mask_dir}: {', '.join(p.name for p in candidates)}; keep one"
            )
        found.append(candidates[0])
    return found


def load_mask(path: Path, height: int, width: int) -> tuple[torch.Tensor, bool]:
    """A ``(1, H, W)`` binary mask (white = repaint, threshold 0.5, as diffusers binarises).

    A mask of another size is resized (nearest) only if its aspect ratio matches the
    image's; returns ``(mask, resized)``.
    """
    import numpy as np
    from PIL import Image

    with Image.open(path) as handle:
        picture = handle.convert("L")
    resized = picture.size != (width, height)
    if resized:
        mask_w, mask_h = picture.size
        if abs(mask_w * height - mask_h * width) > max(mask_w, mask_h):  # more than a pixel off
            raise ValueError(
                f"mask {path} is {mask_w}x{mask_h} but the image is {width}x{height}: "
                "different aspect ratios, so the mask cannot be matched to the image"
            )
        picture = picture.resize((width, height), Image.NEAREST)
    values = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return (values >= 0.5).to(torch.float32)[None], resized


def masks_from_folder(
    mask_dir: str | Path, image_names: list[str], height: int, width: int, device=None
) -> tuple[torch.Tensor, list[str]]:
    """``(N, 1, H, W)`` masks matched to ``image_names``; also the names of masks that were resized."""
    paths = find_mask_files(Path(mask_dir), image_names)
    masks, resized = [], []
    for name, path in zip(image_names, paths):
        mask, was_resized = load_mask(path, height, width)
        masks.append(mask)
        if was_resized:
            resized.append(name)
    return torch.stack(masks).to(device), resized


def inpaint_any_width(
    model,
    images: torch.Tensor,
    masks: torch.Tensor,
    prompt: str,
    *,
    steps: int,
    guidance_scale: float,
    strength: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The steps of diffusers' ``StableDiffusionInpaintPipeline`` for an inpainting UNet that
    reads ``2·C + 1`` channels with ``C`` other than SD's 4 (the toy's 16-channel latents).

    diffusers' pipeline accepts only 4- or 9-channel UNets (``pipeline_stable_diffusion_inpaint.py``,
    "should have either 4 or 9 input channels"), so the same steps are taken here: DDIM with
    ``steps`` steps from ``strength``·T (pure noise at strength 1), the UNet fed
    ``[z_t, mask at latent size, E(masked image)·s]``, masked pixels zeroed in ``[-1, 1]``,
    classifier-free guidance against the empty prompt, decode. Images ``(N, 3, H, W)`` in
    ``[0, 1]``; returns the decoded images (the caller pastes the kept pixels back). The random
    draws come from ``generator`` in another order than diffusers', so seeds do not match its.
    """
    import torch.nn.functional as F
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(steps)
    kept = min(int(steps * strength), steps)
    timesteps = scheduler.timesteps[steps - kept :]
    device, dtype = model.device, model.dtype
    batch = images.shape[0]
    pixels = images.to(device, dtype)
    binary = (masks.to(device, dtype) >= 0.5).to(dtype)
    # Masked pixels zeroed in [-1, 1], i.e. mid-grey in [0, 1] (what the toy's inpainting UNet trained on).
    masked_latents = model.encode(pixels * (1 - binary) + 0.5 * binary, mode="sample", generator=generator)
    latent_mask = F.interpolate(binary, size=masked_latents.shape[-2:])
    noise = torch.randn(masked_latents.shape, generator=generator, device=generator.device).to(device, dtype)
    if kept == steps:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(model.encode(pixels, mode="sample", generator=generator), noise, timesteps[:1])
    conditional = model.encode_prompt(prompt, batch)
    unconditional = model.negative_conditioning(batch)
    for t in timesteps:
        net_input = scheduler.scale_model_input(latents, t)
        net_input = torch.cat([net_input, latent_mask, masked_latents], dim=1)
        step = t.expand(batch).to(device)
        eps_text = model.predict_noise(net_input, step, conditional, unet=model.inpaint_unet)
        if guidance_scale > 1.0:
            eps_empty = model.predict_noise(net_input, step, unconditional, unet=model.inpaint_unet)
            eps_text = eps_empty + guidance_scale * (eps_text - eps_empty)
        latents = scheduler.step(eps_text, t, latents).prev_sample
    return model.decode(latents)


@MIMICRY.register("inpaint")
class Inpaint(Mimicry):
    """Inpainting with SD's inpainting UNet through diffusers; the kept region is pasted back.

    The UNet reads the noisy latent, the mask and the masked image's latent (9 channels for
    SD's 4-channel latents, 33 for the toy's 16).

    ``StableDiffusionInpaintPipeline`` repaints where the mask is 1 and conditions on the
    rest; afterwards the kept pixels are copied back from the input exactly (as the
    reference does; the VAE would otherwise alter them), which ``context.notes["paste_back"]``
    records. Images are ``(N, 3, H, W)`` in ``[0, 1]``; the output has the same shape and range.

    Masks (1 = repaint):
        ``"center"``: a centred box, sides ``box`` (0.5) of the image's.
        ``"background"``: everything but a centred ellipse of ``ellipse`` (0.6, 0.8) of the
            image's width and height (a portrait's face and shoulders kept).
        ``"folder"``: one file per image in ``context.mask_dir`` with the image's stem (``.png/.jpg/.jpeg``); grey masks are
            thresholded at 0.5; a missing mask is an error naming the image and the folder.

    Config (defaults from docs/MIMICRY.md): ``steps`` 50, ``guidance_scale`` 7.5, ``strength`` 1.0.
    The prompt is ``context.prompt``.
    """

    # 2: strength rows on the repainted region (metrics/masked.py); the outputs are unchanged.
    version = 2
    needs_inpaint_unet = True

    @dataclass(frozen=True)
    class Config:
        mask: Literal["center", "background", "folder"] = "center"
        steps: int = bounded(50, 1, 10_000)
        guidance_scale: float = bounded(7.5, 0, 100)
        strength: float = bounded(1.0, 0, 1, low_open=True)
        box: float = bounded(0.5, 0, 1, low_open=True)
        ellipse: tuple[float, float] = bounded((0.6, 0.8), 0, 1, low_open=True)

    def acted_region(self, images: torch.Tensor, context: AttackContext) -> torch.Tensor:
        """The repainted region: kept pixels are pasted back from the input (the protected image), so
        strength is measured on the mask's box, the whole image as ``<metric>-whole`` (#27)."""
        return self.masks(images, context)

    def masks(self, images: torch.Tensor, context: AttackContext) -> torch.Tensor:
        """The ``(N, 1, H, W)`` masks this call uses (1 = repaint)."""
        batch, _, height, width = images.shape
        kind = self.config.mask
        if kind != "folder" and context.mask_dir:
            log.warning("inpaint: a mask folder was given but mask=%r; set inpaint.mask=folder to use it", kind)
            note(context, self.name, "mask_folder_ignored", True)
        if kind == "center":
            return center_box_mask(batch, height, width, self.config.box, device=images.device)
        if kind == "background":
            return background_mask(batch, height, width, tuple(self.config.ellipse), device=images.device)
        if not context.mask_dir:
            raise ValueError("inpaint: mask=folder needs a mask folder (context.mask_dir), and none was given")
        if len(context.image_names) != batch:
            raise ValueError(
                f"inpaint: {batch} images but {len(context.image_names)} image names to match "
                f"masks in {context.mask_dir}"
            )
        masks, resized = masks_from_folder(context.mask_dir, context.image_names, height, width, images.device)
        if resized:
            note(context, self.name, "masks_resized", resized)
        return masks

    def flow_inpaint(self, images, masks, model, generator, context) -> torch.Tensor:
        """A flow model (SD 3 class): diffusers' ``StableDiffusion3InpaintPipeline`` with the model's own
        16-channel transformer. With a transformer of 16 input channels the pipeline repaints by
        blending: after every Euler step it puts back the known latents re-noised to the next σ
        outside the mask (``pipeline_stable_diffusion_3_inpaint.py``, the ``num_channels_transformer
        == 16`` branch: ``init_latents_proper = scheduler.scale_noise(...)``). SD 3 ships no
        separate inpainting transformer, so none is trained for toy-flow."""
        batch, _, height, width = images.shape
        pipe = model.inpaint_pipeline()
        note(context, self.name, "loop", "diffusers StableDiffusion3InpaintPipeline (latent blending)")
        return pipe(
            **model.pipeline_prompt_kwargs(context.prompt, batch, self.config.guidance_scale),
            image=images,
            mask_image=masks,
            height=height,
            width=width,
            strength=self.config.strength,
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance_scale,
            generator=generator,
            output_type="pt",
        ).images

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        check_images(images, self.name)
        if not 0.0 < self.config.strength <= 1.0:
            raise ValueError(f"inpaint: strength must be in (0, 1], got {self.config.strength}")
        masks = self.masks(images, context)
        batch, _, height, width = images.shape
        if model.is_flow:
            generated = self.flow_inpaint(images, masks, model, generator, context)
        elif model.inpaint_unet is not None and model.inpaint_unet.config.in_channels not in (4, 9):
            generated = inpaint_any_width(
                model,
                images,
                masks,
                context.prompt,
                steps=self.config.steps,
                guidance_scale=self.config.guidance_scale,
                strength=self.config.strength,
                generator=generator,
            )
            note(context, self.name, "loop", "cloakbench (latents wider than SD's 4)")
        else:
            # SDXL: StableDiffusionXLInpaintPipeline fed the bundle's conditioning (LDM.inpaint_pipeline).
            prompt = (
                model.pipeline_prompt_kwargs(context.prompt, batch, self.config.guidance_scale)
                if model.is_sdxl
                else {"prompt": [context.prompt] * batch}
            )
            pipe = model.inpaint_pipeline()
            if model.is_sdxl:
                note(context, self.name, "loop", f"diffusers {type(pipe).__name__}")
            generated = pipe(
                **prompt,
                image=images,
                mask_image=masks,
                height=height,
                width=width,
                strength=self.config.strength,
                num_inference_steps=self.config.steps,
                guidance_scale=self.config.guidance_scale,
                generator=generator,
                output_type="pt",
            ).images
        generated = generated.to(device=images.device, dtype=torch.float32)
        context.notes["paste_back"] = True
        note(context, self.name, "mask", self.config.mask)
        note(context, self.name, "repainted_fraction", [round(float(m.mean()), 4) for m in masks])
        return torch.where(masks.bool(), generated, images)
