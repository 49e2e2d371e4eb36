"""DreamBooth: the whole UNet (and optionally the text encoder) fine-tuned on the published set.

Ruiz et al., "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", CVPR 2023, arXiv 2208.12242, with the recipe Anti-DreamBooth (Van Le et al.,
ICCV 2023, arXiv 2303.15433) attacks its protections with: ``scripts/attack_with_aspl.sh``
lines 43–67 of VinAIResearch/Anti-DreamBooth — text encoder trained, prior preservation with
200 class images, λ 1, batch 2, learning rate 5e-7 constant, 1000 steps. Hönig et al.
("Adversarial perturbations cannot reliably protect artists from generative AI", arXiv
2406.12027, ``finetune.py`` lines 30–49 of ethz-spylab/robust-style-mimicry) fine-tune SD 2.1
without a class prior at 5e-6 for 2000 steps, batch 4, random flips: set ``learning_rate``,
``steps``, ``batch_size``, ``flip_p`` and ``prior_preservation`` for theirs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from cloakbench.mimicry.base import MIMICRY
from cloakbench.mimicry.finetune import FinetuneAttack, FinetuneConfig, FinetuneResult

UNET_FOLDER = "unet"


@dataclass(frozen=True)
class DreamBoothConfig(FinetuneConfig):
    """:class:`FinetuneConfig` plus ``train_text_encoder`` (the reference: on) and ``save_weights``.

    save_weights: also write the fine-tuned UNet (safetensors, diffusers layout) into the
        work folder, so it becomes a run artifact (off: an SD UNet is 3.4 GB).
    """

    train_text_encoder: bool = True
    save_weights: bool = False


@MIMICRY.register("dreambooth")
class DreamBooth(FinetuneAttack):
    """DreamBooth (Ruiz et al., arXiv 2208.12242): a private copy of the whole UNet fine-tuned on the set.

    All images of the call form one subject. A deep copy of the UNet (and, with
    ``train_text_encoder``, of the text encoder) is trained with the DreamBooth loss
    (``mimicry/finetune.py``); the shared model is never modified. Then ``k`` images are
    generated at seeds ``base + i`` (``base`` drawn first from the generator, so the clean
    twin uses the same seeds). Returns ``(k, 3, R, R)`` in ``[0, 1]``.

    Recipes (``steps`` or ``learning_rate`` 0 picks them): at ≥ 512² the reference's
    1000 steps at 5e-7 with 200 class images; on the tiny and toy models 100 steps at 1e-4
    with 8 class images (a full fine-tune of a small random UNet moves visibly at that rate
    within a CPU minute; 5e-7 would leave it where it started). The loss of every step is
    ``context.notes["loss_trace"]``.
    """

    version = 1
    Config = DreamBoothConfig
    # --quick: a few training steps, two class images and two small generations
    QUICK = {"steps": 4, "k": 2, "sample_steps": 3, "num_class_images": 2, "class_sample_steps": 3}
    LARGE = {"steps": 1000, "learning_rate": 5e-7}
    SMALL = {"steps": 100, "learning_rate": 1e-4}

    def trainable_copy(self, model, generator):
        unet = copy.deepcopy(model.unet).requires_grad_(True)
        return unet, list(unet.parameters())

    def save(self, result: FinetuneResult, work_dir: Path) -> list[Path]:
        if not self.config.save_weights:
            return []
        result.unet.save_pretrained(work_dir / UNET_FOLDER, safe_serialization=True)
        return [work_dir / UNET_FOLDER]
