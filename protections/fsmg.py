"""FSMG, Fully-trained Surrogate Model Guided (Van Le et al., Anti-DreamBooth, ICCV 2023).

"Anti-DreamBooth: Protecting users from personalized text-to-image synthesis", Van Le,
Phung, Nguyen, Dao, Tran, Tran, ICCV 2023, arXiv 2303.15433, Sec. 4.2: fine-tune a
surrogate with DreamBooth on the clean images, then PGD that maximises the surrogate's
denoising loss on the images (``attacks/fsmg.py`` and ``scripts/attack_with_fsmg.sh`` of
VinAIResearch/Anti-DreamBooth).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloakbench.core.config import bounded
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.surrogate import SurrogatePGDConfig, SurrogateProtection


@dataclass(frozen=True)
class FSMGConfig(SurrogatePGDConfig):
    """:class:`SurrogatePGDConfig` plus the two phases' lengths.

    steps: PGD steps, 100 (``attack_with_fsmg.sh`` line 52, ``--max_train_steps=100``).
    surrogate_steps: DreamBooth steps of the surrogate on the clean images (0: 1000 at
        ≥ 512², the script's lines 9–33; 50 on the tiny and toy models).
    surrogate_batch: 2 instance + 2 class images per surrogate step (``--train_batch_size=2``,
        ``attack_with_fsmg.sh`` line 22, with prior preservation: ``train_dreambooth.py``
        ``collate_fn`` lines 493–506 puts the class images after the instances).
    """

    steps: int = bounded(100, 0, 100000)
    surrogate_steps: int = bounded(0, 0, 1_000_000)
    surrogate_batch: int = bounded(2, 1, 64)


@PROTECTIONS.register("fsmg")
class FSMG(SurrogateProtection):
    """FSMG (Van Le et al., arXiv 2303.15433): PGD ascending the loss of a surrogate fine-tuned on the clean set.

    Threat model: the artist (or person) publishes ``x`` with an L∞ perturbation of at most
    ``eps/255`` on ``[0, 1]`` images; the mimic fine-tunes a model on them with DreamBooth.
    FSMG assumes the mimic ends near a model DreamBooth-trained on the clean images and
    raises that model's denoising loss, so fine-tuning on ``x`` learns poorly.

    1. θ' ← DreamBooth(θ, clean images, ``surrogate_steps``), text encoder trained, prior
       preservation (``protections/surrogate.py``; a private copy, the shared model untouched).
    2. ``steps`` PGD steps (one ``t``, one ``ε`` per image per step)::

           L(x) = mean ‖ε − ε_θ'(z_t, t, τ'("a photo of sks person"))‖²,  z = s·E(x)
           x ← clip_[0,1](Π_eps(x + alpha · sign(∇_x L)))

    Config (:class:`FSMGConfig`): eps 6.375 (the reference's 5e-2 on [−1, 1]), alpha 0.6375
    (5e-3), steps 100, surrogate_steps 0 (1000 / 50), surrogate_batch 2 (+ 2 class images), no
    random start, learning_rate 0 (5e-7 at ≥ 512², 1e-4 small), prior preservation with 200 / 4
    class images, lora_rank 0.

    Example::

        protection = PROTECTIONS.get("fsmg").from_overrides({"steps": "2", "surrogate_steps": "2"})
        protected = protection(images, model, generator=torch.Generator().manual_seed(0))
    """

    family = "fine-tuning"
    plain = (
        "Anti-DreamBooth (FSMG): makes the picture hard to fine-tune on, against a copy fine-tuned on clean pictures."
    )

    Config = FSMGConfig
    version = 2
    QUICK = {"steps": 2, "surrogate_steps": 2, "num_class_images": 1, "class_sample_steps": 2}
    PERF_SETUP = {**SurrogateProtection.PERF_SETUP, "surrogate_steps": 1}

    def resolved_surrogate_steps(self, model) -> int:
        return self.config.surrogate_steps or (1000 if model.resolution >= 512 else 50)

    def prepare(self, images, model, *, generator):
        state = super().prepare(images, model, generator=generator)
        self.start_surrogate(state)
        # On the reference clean set when one is given (attack_with_fsmg.sh:9-33 trains on set A).
        state.surrogate.train(
            state.surrogate_images, self.resolved_surrogate_steps(model), state.training_generator, state.prior_images
        )
        return state
