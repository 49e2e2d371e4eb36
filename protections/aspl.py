"""ASPL, Alternating Surrogate and Perturbation Learning (Van Le et al., Anti-DreamBooth, ICCV 2023).

"Anti-DreamBooth: Protecting users from personalized text-to-image synthesis", Van Le,
Phung, Nguyen, Dao, Tran, Tran, ICCV 2023, arXiv 2303.15433, Sec. 4.3 and Algorithm 1;
``attacks/aspl.py`` lines 726–764 and ``scripts/attack_with_aspl.sh`` lines 14–36 of
VinAIResearch/Anti-DreamBooth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cloakbench.core.config import bounded
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDState
from cloakbench.protections.surrogate import SurrogatePGDConfig, SurrogateProtection


@dataclass(frozen=True)
class ASPLConfig(SurrogatePGDConfig):
    """:class:`SurrogatePGDConfig` plus the alternation.

    steps: PGD steps in total, 300 = the script's 50 rounds (``--max_train_steps=50``) ×
        ``max_adv_train_steps``; a round is ``max_adv_train_steps`` PGD steps, the last may be
        shorter. Counting PGD steps keeps ``steps`` what it means for every protection
        (``bench perf`` times one step, the engine runs ``steps``).
    max_f_train_steps: surrogate DreamBooth steps per round (3, ``--max_f_train_steps=3``).
    max_adv_train_steps: PGD steps per round (6, ``--max_adv_train_steps=6``).
    surrogate_profile: "default" trains the surrogates as the paper describes them (gradient
        norm clipped to 1, the model's dtype, every image in turn); "reference" as
        ``train_one_epoch`` of ``attacks/aspl.py`` runs: its clipping a no-op (lines 387, 470),
        pure bf16 weights and optimiser state (lines 407-412), images read from index 0 on every
        call so only instance and class images 0-2 are used (line 418). ``protections/surrogate.py``
        gives the detail; ``--profile reference`` selects it.
    """

    steps: int = bounded(300, 0, 1_000_000)
    max_f_train_steps: int = bounded(3, 0, 100000)
    max_adv_train_steps: int = bounded(6, 1, 100000)
    surrogate_profile: Literal["default", "reference"] = "default"


@PROTECTIONS.register("aspl")
class ASPL(SurrogateProtection):
    """ASPL (Van Le et al., arXiv 2303.15433): alternate surrogate fine-tuning and PGD on its loss.

    Threat model as FSMG (L∞ ``eps/255`` on ``[0, 1]`` images; the mimic fine-tunes with
    DreamBooth). ASPL keeps the surrogate close to what fine-tuning on the *protected*
    images would give. Every round (``attacks/aspl.py`` lines 727–764):

    1. f' ← copy(f); train f' ``max_f_train_steps`` DreamBooth steps on the clean images;
    2. ``max_adv_train_steps`` PGD steps ascending f''s denoising loss::

           L(x) = mean ‖ε − ε_f'(z_t, t, τ_f'("a photo of sks person"))‖²,  z = s·E(x)
           x ← clip_[0,1](Π_eps(x + alpha · sign(∇_x L)))

    3. train f ``max_f_train_steps`` steps on the current protected images (f starts as a
       private copy of the model; the shared model is never modified).

    Config (:class:`ASPLConfig`): eps 6.375 (the reference's 5e-2 on [−1, 1]), alpha 0.6375
    (5e-3), steps 300 (50 rounds × 6), max_f_train_steps 3, max_adv_train_steps 6, no random
    start, learning_rate 0 (5e-7 at ≥ 512² with the text encoder trained; 1e-4 on the tiny and
    toy models), prior preservation with 200 / 4 class images, lora_rank 0 (> 0: the LoRA
    surrogate of ``attacks/aspl_lora.py``).

    Example::

        protection = PROTECTIONS.get("aspl").from_overrides({"steps": "2"})
        protected = protection(images, model, generator=torch.Generator().manual_seed(0))
    """

    family = "fine-tuning"
    plain = "Anti-DreamBooth: makes the picture hard to fine-tune a model on, training a copy of the model alongside."

    Config = ASPLConfig
    version = 2
    # The reference code's quirks where they change results (ASPLConfig.surrogate_profile).
    PROFILES = {"reference": {"surrogate_profile": "reference"}}
    QUICK = {
        "steps": 2,
        "max_f_train_steps": 1,
        "max_adv_train_steps": 1,
        "num_class_images": 1,
        "class_sample_steps": 2,
    }

    def prepare(self, images, model, *, generator):
        state = super().prepare(images, model, generator=generator)
        self.start_surrogate(state)
        state.round_surrogate = None
        return state

    def reference_quirks(self) -> bool:
        return self.config.surrogate_profile == "reference"

    def surrogate_for_step(self, state: PGDState):
        return state.round_surrogate

    def step(self, state: PGDState):
        """One PGD step; at a round's start f' is trained on the clean images, at its end f on the protected."""
        per_round, total = self.config.max_adv_train_steps, self.config.steps
        if state.step_index % per_round == 0:  # 1. f' = f.clone(), trained on the clean images
            state.round_surrogate = state.surrogate.clone()
            # f' on the reference clean set when given (aspl.py:693-702, 730-737: clean_data = set A)
            state.round_surrogate.train(
                state.surrogate_images, self.config.max_f_train_steps, state.training_generator, state.prior_images
            )
        loss = super().step(state)  # 2. one PGD step against f'
        if state.step_index % per_round == 0 or state.step_index == total:  # 3. f trained on the protected
            state.surrogate.train(
                state.adversarial.detach(), self.config.max_f_train_steps, state.training_generator, state.prior_images
            )
            state.round_surrogate = None
        return loss
