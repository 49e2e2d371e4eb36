"""DreamBooth-LoRA: low-rank adapters on the UNet's attention, trained on the published set.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685, applied to
DreamBooth (Ruiz et al., CVPR 2023, arXiv 2208.12242) as Anti-DreamBooth's
``train_dreambooth_lora.py`` (VinAIResearch/Anti-DreamBooth) and diffusers'
``examples/dreambooth/train_dreambooth_lora.py`` do: adapters on ``to_q``, ``to_k``,
``to_v``, ``to_out.0`` of every attention block, rank 4 (``train_dreambooth_lora.py`` line
445), learning rate 5e-4 (line 308), constant schedule, AdamW with weight decay 1e-2 (line
349), gradient norm 1 (line 351), batch as the DreamBooth scripts' 2. The loop is
``mimicry/finetune.py``.

On a flow-matching model (SD 3 class) the adapters go on the transformer as diffusers'
``examples/dreambooth/train_dreambooth_lora_sd3.py`` (huggingface/diffusers at 0185674f) puts
them: ``LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["to_k",
"to_q", "to_v", "to_out.0"])`` — the joint attention's image-stream projections of every MMDiT
block (the text stream's ``add_q_proj``/``add_k_proj``/``add_v_proj``/``to_add_out`` are left
alone), rank 4, the text encoders frozen. Its loss with the default ``--weighting_scheme
sigma_sqrt`` and the EDM preconditioning (``model_pred·(−σ) + z_t`` against ``z``, weighted
``σ⁻²``) is exactly ``‖v_θ(z_t) − (ε − z)‖²`` at uniformly drawn grid indices: the flow branch
of ``core/finetuning.py``'s ``denoising_loss`` with this loop's uniform ``t``. Deliberate
difference: the rate and steps are the model-scaled recipe below (the script's 1e-4 is for SD 3
at 1024²), as for the ε family. Adapters are saved with ``StableDiffusion3Pipeline.save_lora_weights``.

On SDXL the recipe is diffusers' ``examples/dreambooth/train_dreambooth_lora_sdxl.py``
(huggingface/diffusers at 58eb52c0): adapters on the UNet's ``["to_k", "to_q", "to_v", "to_out.0"]``
(line 1225) with ``LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian")`` (lines
1206–1212), rank 4 (line 660), the two text encoders frozen unless ``--train_text_encoder``
(line 437, off by default; this attack never trains them), ε-MSE at ``t ~ U{0..T−1}`` (lines
1700–1703, 1835) with the UNet called with ``added_cond_kwargs`` — the second encoder's pooled
vector and ``compute_time_ids(original_size, crop) = original_size + crop + (R, R)`` (lines
1477–1480; called per image at lines 1728–1733, the UNet call at 1741–1753), which for the harness's uncropped images at the working size is
``LDM.add_time_ids``. Deliberate differences: the model-scaled recipe below instead of the
script's rate 1e-4 (line 493), batch 4 (line 442) and AdamW weight decay 1e-4 (line 572), so
the three families share one recipe; adapters are saved with ``StableDiffusionXLPipeline.save_lora_weights``
(line 1968).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloakbench.core import finetuning
from cloakbench.core.config import bounded
from cloakbench.mimicry.base import MIMICRY
from cloakbench.mimicry.finetune import FinetuneAttack, FinetuneConfig, FinetuneResult

#: The file diffusers' ``pipeline.load_lora_weights(folder)`` reads by default.
ADAPTER_FILE = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoRAConfig(FinetuneConfig):
    """:class:`FinetuneConfig` plus ``rank`` (4, the reference's)."""

    rank: int = bounded(4, 1, 1024)


@MIMICRY.register("lora")
class DreamBoothLoRA(FinetuneAttack):
    """DreamBooth-LoRA (Hu et al. arXiv 2106.09685 on Ruiz et al. arXiv 2208.12242): adapters learned on the set.

    All images of the call form one subject. A deep copy of the UNet gets rank-``rank``
    LoRA adapters on its attention projections (``peft``), trained with the DreamBooth loss
    (``mimicry/finetune.py``: instance prompt ``"a photo of sks <class>"``, prior
    preservation on class images the base model generates). The adapter is saved as
    ``context.work_dir/pytorch_lora_weights.safetensors`` (reloads with
    ``pipeline.load_lora_weights(folder)``), then ``k`` images are generated at seeds
    ``base + i`` (``base`` drawn first from the generator, so the clean twin uses the same
    seeds). Returns ``(k, 3, R, R)`` in ``[0, 1]``.

    Recipes (``steps`` or ``learning_rate`` 0 picks them): at ≥ 512² the reference's
    1000 steps (Anti-DreamBooth's DreamBooth scripts) at 5e-4 with 200 class images; on the
    tiny and toy models 200 steps at 1e-3 with 8 class images — an adapter of rank 4 on a
    64² model needs a larger rate to move in 200 steps; on a busy 2-core CPU the tiny model
    trains and generates in well under a minute. The loss of every step is
    ``context.notes["loss_trace"]``.
    """

    # 2: the adapters' initial A drawn from the cell's generator (peft drew from the global RNG)
    version = 2
    Config = LoRAConfig
    # --quick: a few training steps, two class images and two small generations
    QUICK = {"steps": 4, "k": 2, "sample_steps": 3, "num_class_images": 2, "class_sample_steps": 3}
    LARGE = {"steps": 1000, "learning_rate": 5e-4}
    SMALL = {"steps": 200, "learning_rate": 1e-3}

    def trainable_copy(self, model, generator):
        import copy

        unet = copy.deepcopy(model.unet)
        return unet, finetuning.add_lora(unet, self.config.rank, generator=generator)

    def save(self, result: FinetuneResult, work_dir: Path) -> list[Path]:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if getattr(result.unet.config, "addition_embed_type", None) == "text_time":  # an SDXL UNet
            StableDiffusionXLPipeline.save_lora_weights(
                str(work_dir),
                unet_lora_layers=finetuning.lora_state_dict(result.unet),
                weight_name=ADAPTER_FILE,
                safe_serialization=True,
            )
            return [work_dir / ADAPTER_FILE]
        if getattr(result.unet.config, "joint_attention_dim", None) is not None:  # an SD 3 transformer
            from diffusers import StableDiffusion3Pipeline
            from peft.utils import get_peft_model_state_dict

            StableDiffusion3Pipeline.save_lora_weights(
                str(work_dir),
                transformer_lora_layers=get_peft_model_state_dict(result.unet),
                weight_name=ADAPTER_FILE,
                safe_serialization=True,
            )
            return [work_dir / ADAPTER_FILE]

        StableDiffusionPipeline.save_lora_weights(
            str(work_dir),
            unet_lora_layers=finetuning.lora_state_dict(result.unet),
            weight_name=ADAPTER_FILE,
            safe_serialization=True,
        )
        return [work_dir / ADAPTER_FILE]
