"""Model architectures built from configs with seeded random weights (nothing to download).

- ``tiny-random``: small Stable-Diffusion-shaped components (64², 4 latent channels) for tests.
- ``tiny-random-sdxl``: small SDXL-shaped components (two CLIP text encoders, the second with a
  projection; a UNet with SDXL's ``text_time`` added embedding) for tests.
- ``sd15-arch`` / ``sd21-arch`` / ``sdxl-arch``: the published architectures at real size, for
  cost measurement (``bench perf``) where no weights are needed.

Each build's identity is :func:`random_weights_hash` of its configs and seed, so a plan can key
cells on it without building anything (``cloakbench.core.zoo``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from cloakbench.core.ldm import LDM, bundle
from cloakbench.core.tokenizer import build_tokenizer


def random_weights_hash(configs: dict, seed: int) -> str:
    """The identity of seeded random weights: the seed and a hash of the configs they are built from."""
    digest = hashlib.sha256(json.dumps([configs], sort_keys=True, default=str).encode()).hexdigest()
    return f"random:{seed}:{digest[:16]}"


def project_tokenizer():
    """The project's byte-level CLIP tokenizer, built in a temporary folder removed after loading."""
    with tempfile.TemporaryDirectory(prefix="cloakbench-tokenizer-") as folder:
        return build_tokenizer(Path(folder))


# -- tiny-random ------------------------------------------------------------------
TINY_RESOLUTION = 64


def tiny_text_config(width: int) -> dict:
    """A two-layer CLIP text encoder of ``width`` (MLP 2x, 4 heads, 77 tokens): the tiny bundles' encoders."""
    return dict(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=width,
    )


def tiny_configs() -> dict[str, dict]:
    """Small SD-shaped configs: VAE downsampling 8 with 4 latent channels, as in SD."""
    vae = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32, 32, 32),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=TINY_RESOLUTION,
    )
    unet = dict(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    text = tiny_text_config(32)
    return {"vae": vae, "unet": unet, "text": text}


def build_components(
    configs: dict[str, dict], seed: int, tokenizer_dir: Path | None = None, inpaint: bool = True
) -> dict:
    """Seeded random SD-shaped components from ``configs`` (see :func:`tiny_configs`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(tokenizer_dir) if tokenizer_dir is not None else project_tokenizer()
    # A private RNG stream: building a model must not move the caller's global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**configs["vae"])
        unet = UNet2DConditionModel(**configs["unet"])
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **configs["text"],
        )
        text_encoder = CLIPTextModel(text_config)
        inpaint_unet = UNet2DConditionModel(**{**configs["unet"], "in_channels": 9}) if inpaint else None
    return dict(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, inpaint_unet=inpaint_unet)


def tiny_random(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> LDM:
    """Seeded tiny random SD-shaped model (64², latent 8²) for tests; builds in about a second."""
    parts = build_components(tiny_configs(), seed)
    return bundle("tiny-random", parts, device, dtype, random_weights_hash(tiny_configs(), seed), TINY_RESOLUTION)


# -- tiny-random-sdxl ---------------------------------------------------------------
def tiny_sdxl_configs() -> dict[str, dict]:
    """Small configs with SDXL base's component layout (stabilityai/stable-diffusion-xl-base-1.0).

    Two text encoders of different widths, as SDXL's CLIP ViT-L (768) and OpenCLIP bigG (1280):
    here 32 and 48, so the UNet's ``cross_attention_dim`` is their sum (80; SDXL's 2048), and the
    second is a ``CLIPTextModelWithProjection`` whose projected pooled vector (48; SDXL's 1280)
    joins the six size ids in the added embedding: ``projection_class_embeddings_input_dim =
    6 · addition_time_embed_dim + 48`` (SDXL's 6 · 256 + 1280 = 2816). The UNet's blocks follow
    SDXL's pattern (no attention in the first level, linear projections); the VAE has 4 latent
    channels and SDXL VAE's ``scaling_factor`` 0.13025.
    """
    vae = dict(tiny_configs()["vae"], scaling_factor=0.13025)
    text = tiny_text_config(32)
    text_2 = tiny_text_config(48)
    unet = dict(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        cross_attention_dim=text["hidden_size"] + text_2["hidden_size"],
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + text_2["projection_dim"],
    )
    return {"vae": vae, "unet": unet, "text": text, "text_2": text_2}


def build_sdxl_components(configs: dict[str, dict], seed: int) -> dict:
    """Seeded random SDXL-shaped components from ``configs`` (see :func:`tiny_sdxl_configs`): the VAE, the
    UNet, ``text_encoder`` (``CLIPTextModel``), ``text_encoder_2`` (``CLIPTextModelWithProjection``) and
    a tokenizer for each (the project's; SDXL ships two CLIP tokenizers of one vocabulary)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = project_tokenizer(), project_tokenizer()

    def text_config(settings: dict) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **settings,
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**configs["vae"])
        unet = UNet2DConditionModel(**configs["unet"])
        text_encoder = CLIPTextModel(text_config(configs["text"]))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(configs["text_2"]))
    return dict(
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scaling_factor=configs["vae"]["scaling_factor"],
        # SDXL base's model_index.json sets it: guidance's unconditional branch is zeros.
        force_zeros_for_empty_prompt=True,
    )


def tiny_random_sdxl(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> LDM:
    """Seeded tiny random SDXL-shaped model (64², latent 8² × 4, two text encoders) for tests."""
    configs = tiny_sdxl_configs()
    parts = build_sdxl_components(configs, seed)
    return bundle("tiny-random-sdxl", parts, device, dtype, random_weights_hash(configs, seed), TINY_RESOLUTION)


# -- the real architectures with random weights -------------------------------------
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512,
)
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
)
SD21_UNET = {
    **SD15_UNET,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
SD21_TEXT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    projection_dim=512,
    hidden_act="gelu",
)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)


def real_architecture(
    name: str,
    unet_cfg: dict,
    text_cfg: dict | None,
    resolution: int,
    device,
    dtype,
    seed: int,
    scaling_factor: float = 0.18215,
) -> LDM:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = project_tokenizer()
    with torch.random.fork_rng(devices=[]):  # leave the caller's global seed where it was
        torch.manual_seed(seed)
        parts: dict[str, Any] = {
            "vae": AutoencoderKL(**SD_VAE),
            "unet": UNet2DConditionModel(**unet_cfg),
            "tokenizer": tokenizer,
            "scaling_factor": scaling_factor,
        }
        if text_cfg is not None:
            parts["text_encoder"] = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=49408,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **text_cfg,
                )
            )
    override = None
    if text_cfg is None:
        # SDXL's two text encoders only run once per prompt, never inside a PGD step, so
        # the cost benchmark feeds seeded embeddings of the true shapes instead; the size ids
        # come from the working size in LDM.predict, as for a loaded SDXL folder.
        from cloakbench.core.ldm import TextConditioning

        generator = torch.Generator().manual_seed(seed)
        hidden = torch.randn(1, 77, unet_cfg["cross_attention_dim"], generator=generator)
        pooled = torch.randn(1, 1280, generator=generator)

        def override(batch: int, _dev=torch.device(device), _dt=dtype) -> dict:
            return {"encoder_hidden_states": TextConditioning(hidden.to(_dev, _dt), pooled.to(_dev, _dt)).expand(batch)}

    return bundle(
        name,
        parts,
        device,
        dtype,
        random_weights_hash(architecture_configs(unet_cfg, text_cfg), seed),
        resolution,
        conditioning_override=override,
    )


def architecture_configs(unet_cfg: dict, text_cfg: dict | None) -> dict:
    return {"unet": unet_cfg, "text": text_cfg, "vae": SD_VAE}


# -- the flow-matching family (SD 3 / FLUX class) -----------------------------------
def tiny_flow_configs() -> dict[str, dict]:
    """Small SD 3-shaped configs: a 16-channel VAE with SD 3's shift and scaling factors, an MMDiT.

    ``SD3Transformer2DModel`` rather than ``FluxTransformer2DModel``: SD 3's MMDiT is conditioned
    on CLIP token states and a pooled CLIP vector only — what one small CLIP text encoder gives,
    as toy-flow has — while FLUX.1 also needs T5 token states and (dev) a distilled-guidance
    embedding. The factors are SD 3 Medium's VAE config (``shift_factor`` 0.0609,
    ``scaling_factor`` 1.5305): on random weights they only exercise the shift's code path.
    The scheduler is SD 3 Medium's (``FlowMatchEulerDiscreteScheduler``, ``shift`` 3.0).
    """
    vae = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        layers_per_block=1,
        block_out_channels=(16, 32, 32, 32),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=TINY_RESOLUTION,
        shift_factor=0.0609,
        scaling_factor=1.5305,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    transformer = dict(
        sample_size=TINY_RESOLUTION // 8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        pos_embed_max_size=16,
    )
    text = tiny_text_config(32)
    return {"vae": vae, "transformer": transformer, "text": text, "scheduler": {"shift": 3.0}}


def build_flow_components(configs: dict[str, dict], seed: int, tokenizer=None) -> dict:
    """Seeded random SD 3-shaped components from ``configs`` (see :func:`tiny_flow_configs`)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from cloakbench.core.ldm import flow_noise_schedule

    tokenizer = tokenizer if tokenizer is not None else project_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**configs["vae"])
        transformer = SD3Transformer2DModel(**configs["transformer"])
        text_encoder = CLIPTextModelWithProjection(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **configs["text"],
            )
        )
    return dict(
        family="flow-transformer",
        vae=vae,
        unet=transformer,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=flow_noise_schedule(configs["scheduler"]["shift"]),
        scaling_factor=configs["vae"]["scaling_factor"],
        shift_factor=configs["vae"]["shift_factor"],
    )


def tiny_random_flow(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> LDM:
    """Seeded tiny random SD 3-shaped model (64², latent 8² × 16, MMDiT) for tests; builds in about a second."""
    configs = tiny_flow_configs()
    parts = build_flow_components(configs, seed)
    return bundle("tiny-random-flow", parts, device, dtype, random_weights_hash(configs, seed), TINY_RESOLUTION)


#: SD 3 Medium's transformer (stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json).
SD3_TRANSFORMER = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
#: SD 3's 16-channel autoencoder (vae/config.json of the same repository).
SD3_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
#: SD 3's text sequence: 77 CLIP tokens (CLIP-L 768 ⊕ CLIP-G 1280, zero-padded to 4096) then 256 T5-XXL tokens.
SD3_TEXT_TOKENS, SD3_POOLED = 77 + 256, 2048


def sd3_configs() -> dict:
    return {"transformer": SD3_TRANSFORMER, "vae": SD3_VAE, "text_tokens": SD3_TEXT_TOKENS, "shift": 3.0}


def sd3_architecture(device="cpu", dtype=torch.float32, seed: int = 0) -> LDM:
    """SD 3 Medium's transformer and VAE at real size with seeded random weights (cost measurement only).

    Its three text encoders (two CLIPs and T5-XXL, 4.7 B parameters together) run once per
    prompt and never inside a PGD step, so, as for ``sdxl-arch``, the bundle feeds seeded
    conditioning of the true shapes instead: token states ``(1, 333, 4096)`` and the pooled
    vector ``(1, 2048)``.
    """
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    from cloakbench.core.ldm import TextConditioning, flow_noise_schedule

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**SD3_VAE)
        transformer = SD3Transformer2DModel(**SD3_TRANSFORMER)
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, SD3_TEXT_TOKENS, SD3_TRANSFORMER["joint_attention_dim"], generator=generator)
    pooled = torch.randn(1, SD3_POOLED, generator=generator)

    def override(batch: int, _dev=torch.device(device), _dt=dtype) -> dict:
        return {"encoder_hidden_states": TextConditioning(hidden.to(_dev, _dt), pooled.to(_dev, _dt)).expand(batch)}

    parts = dict(
        family="flow-transformer",
        vae=vae,
        unet=transformer,
        tokenizer=project_tokenizer(),
        scheduler=flow_noise_schedule(3.0),
        scaling_factor=SD3_VAE["scaling_factor"],
        shift_factor=SD3_VAE["shift_factor"],
    )
    return bundle(
        "sd3-arch", parts, device, dtype, random_weights_hash(sd3_configs(), seed), 1024, conditioning_override=override
    )


#: FLUX.1 [dev]'s transformer (black-forest-labs/FLUX.1-dev, transformer/config.json).
FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)


def flux_parameter_count() -> int:
    """FLUX.1's transformer parameters, counted on the meta device (nothing is allocated)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return sum(p.numel() for p in FluxTransformer2DModel(**FLUX_TRANSFORMER).parameters())


def flux_unavailable_reason(device="cpu", dtype=torch.float32) -> str:
    """Why ``flux-arch`` cannot be built here: the memory it needs, or the forward not yet wired.

    The estimate is the transformer's weights in ``dtype`` (counted exactly on the meta device)
    plus the same again for the activations a PGD step through it keeps; the T5-XXL and CLIP
    encoders would run once per prompt and are not counted.
    """
    from cloakbench.core.devices import available_memory_bytes

    weights = flux_parameter_count() * torch.empty((), dtype=dtype).element_size()
    needed, have = 2 * weights, available_memory_bytes(device)
    if needed > have:
        return (
            f"flux-arch needs about {needed / 2**30:.0f} GiB on {device} ({weights / 2**30:.0f} GiB of "
            f"{str(dtype).replace('torch.', '')} transformer weights, as much again for a PGD step's activations) "
            f"and {have / 2**30:.0f} GiB is available; run it on a GPU with that much memory, or measure sd3-arch here"
        )
    return (
        "flux-arch: the memory is there, but the bundle does not yet drive FLUX's transformer (packed 2×2 "
        "latents, image/text position ids and the guidance embedding are not wired in cloakbench.core.ldm); "
        "measure sd3-arch"
    )


def flux_architecture(device="cpu", dtype=torch.float32, seed: int = 0) -> LDM:
    """FLUX.1's transformer at real size: always refused today, with :func:`flux_unavailable_reason`."""
    from cloakbench.core.ldm import ModelError

    raise ModelError(flux_unavailable_reason(device, dtype))
