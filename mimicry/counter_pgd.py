"""counter-pgd: the copier's own PGD, against the protection, inside its own L∞ budget.

A protection is a PGD on the image that drives the latent-diffusion model's encoder off course
(Xue et al., ICLR 2024, arXiv 2311.12832, Sec. 4: for every protection they study, the latent
moves far more than the pixels). The copier runs a PGD of the opposite sign from the protected
image: the adaptive attack of Carlini et al. ("On Evaluating Adversarial Robustness",
arXiv 1902.06705, Sec. 5) aimed at that mechanism. Documented in docs/MIMICRY.md,
"Adaptive attackers".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry
from cloakbench.mimicry.common import note
from cloakbench.mimicry.filters import default_sigma, gaussian_blur


@dataclass(frozen=True)
class CounterPGDConfig:
    """The copier's budget and step, in 8-bit units of ``[0, 1]`` images, and the blur of the objective."""

    eps: float = bounded(16.0, 0, 255, low_open=True)
    alpha: float = bounded(1.0, 0, 255, low_open=True)
    steps: int = bounded(100, 1, 100_000)
    kernel_size: int = bounded(7, 1, 255)
    sigma: float = bounded(0.0, 0, 100)  # 0: OpenCV's rule for the kernel size (1.4 for 7)


@MIMICRY.register("counter-pgd")
class CounterPGD(Mimicry):
    """Counter-PGD: descend the encoder deviation ‖E(x′) − E(blur(x′))‖² from the protected image, within eps.

    Threat model (adaptive, white-box on the attacker's model, ``--attack-model``, which may
    differ from the protector's): the copier holds the published 8-bit image ``x̃`` and its own
    latent diffusion model's encoder; it does not know which protection was used, its target,
    its seed, or the clean image.

    The objective, and why not the protection's own objective reversed. Reversing a
    protection's loss needs what the copier lacks: the untargeted encoder attack ascends
    ‖E(x) − E(x_clean)‖² (reversing it needs ``x_clean``), PhotoGuard and Mist descend towards a
    target latent (moving away from a target is not moving towards the clean latent), and
    reversing AdvDM's ascent of the diffusion loss only denoises towards the model's prior. What
    every protection of the registry shares is the mechanism Xue et al. measure (arXiv
    2311.12832, Sec. 4, Fig. 3): a small, high-frequency ``δx`` becomes a large ``δz``, while a
    Gaussian blur removes most of ``δx`` and keeps the picture (MetaCloak's and Hönig et al.'s
    blur and noise purifications, arXiv 2311.13127, 2406.12027). So the copier descends the
    encoder deviation between the image and its blur, which is large exactly where the encoder
    has been attacked — the latent-space counterpart of IMPRESS's consistency loss
    ‖x − D(E(x))‖² (Cao et al., arXiv 2310.19248), without a decoder pass. It needs no knowledge
    of the protection, so it is defined for unknown ones too.

    Update, from ``x′₀ = x̃`` (no random start: the copier starts from what it downloaded), with
    ``z(·) = s·E(·)`` the scaled posterior mean of the attack model and ``b`` a Gaussian blur
    (``kernel_size`` 7, σ by OpenCV's rule, reflect padding; the gradient flows through both
    terms)::

        x′ ← clip_[0,1](Π_{x̃, eps}(x′ − alpha · sign(∇_x′ ‖z(x′) − z(b(x′))‖²)))

    ``eps``: the copier's own L∞ budget, ``eps/255`` (default 16, the protections' default
    budget: the copier spends as much as the protector); ``alpha`` 1/255 per step; ``steps``
    100 (the protections' step count). The loss of the first and last step is in the note.
    The result (8-bit rounded by the harness) goes to the next stage (``counter-pgd+sdedit``).
    """

    version = 1
    is_purification = True
    adaptive = True
    Config = CounterPGDConfig

    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        check_images(images, self.name, multiple_of=8)
        size = self.config.kernel_size
        if size < 1 or size % 2 == 0:
            raise ValueError(f"counter-pgd.kernel_size must be odd and positive, got {size}")
        sigma = self.config.sigma if self.config.sigma > 0 else default_sigma(size)
        start = images.detach().to(model.device, torch.float32)
        eps, alpha = self.config.eps / 255.0, self.config.alpha / 255.0
        current = start.clone()
        losses = []
        for _ in range(self.config.steps):
            current = current.detach().requires_grad_(True)
            deviation = encoder_deviation(model, current, size, sigma)
            (gradient,) = torch.autograd.grad(deviation.sum(), current)
            with torch.no_grad():
                moved = current - alpha * gradient.sign()
                current = torch.minimum(torch.maximum(moved, start - eps), start + eps).clamp(0.0, 1.0)
            losses.append(float(deviation.detach().mean()))
        with torch.no_grad():
            final = float(encoder_deviation(model, current, size, sigma).mean())
        note(context, self.name, "deviation", f"{losses[0]:.4g} -> {final:.4g}")
        return current.detach().to(device=images.device, dtype=torch.float32)


def encoder_deviation(model, images: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """``(N,)``: ``‖s·E(x) − s·E(blur(x))‖²`` per image, posterior means, summed over latent elements."""
    blurred = gaussian_blur(images, kernel_size, sigma)
    both = model.encode(torch.cat([images, blurred]).to(model.dtype), mode="mean").float()
    sharp, smooth = both.chunk(2)
    return (sharp - smooth).pow(2).flatten(1).sum(1)
