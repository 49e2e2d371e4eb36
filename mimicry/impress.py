"""IMPRESS: purify by making the image consistent under the model's own autoencoder.

Cao et al., "IMPRESS: Evaluating the Resilience of Imperceptible Perturbations Against
Unauthorized Data Usage in Diffusion-Based Generative AI", NeurIPS 2023 (arXiv 2310.19248).
A protective perturbation usually makes ``D(E(x))`` differ from ``x``; IMPRESS optimises
the image back towards autoencoder consistency while staying perceptually close to the
published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry
from cloakbench.mimicry.common import note


def consistency_loss(model, images: torch.Tensor, latent: str = "mean",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image ``mean((D(E(x)) − x)²)``, shape ``(N,)``; differentiable w.r.t. ``images``.

    ``D`` here is the decoder without :meth:`LDM.decode`'s final clamp to ``[0, 1]``: the
    clamp would zero the gradient wherever the reconstruction overshoots.
    """
    latents = model.encode(images, mode=latent, generator=generator)
    decoded = model.vae.decode(latents / model.scaling_factor).sample
    reconstruction = ((decoded + 1.0) / 2.0).to(images.dtype)
    return ((reconstruction - images) ** 2).flatten(1).mean(dim=1)


@MIMICRY.register("impress")
class Impress(Mimicry):
    """IMPRESS (Cao et al., arXiv 2310.19248): minimise ‖D(E(x_p)) − x_p‖² + α·max(LPIPS(x_p, x) − ε, 0).

    ``x_p`` starts at the published image ``x`` and is optimised with Adam (``lr`` 0.01),
    kept in ``[0, 1]`` after every step. The consistency term is the per-pixel mean squared
    error of the VAE round trip (posterior mean, so the objective is deterministic); the
    distance term is LPIPS-AlexNet (Zhang et al., arXiv 1801.03924) with budget ``eps_lpips``
    0.1 and weight ``alpha`` 0.1. Each image is optimised independently (losses summed).

    ``distance``: ``"lpips"`` (the paper) needs the torchvision AlexNet weights
    (``alexnet-owt-7be5be79.pth`` in ``torch.hub.get_dir()/checkpoints``, or ``lpips_path``);
    without them the attack raises :class:`AttackUnavailable` naming the file — it never
    falls back on its own. ``"l2"`` (explicit opt-in) uses the mean squared pixel error with
    budget ``eps_l2`` 1e-3 (≈ PSNR 30 dB; a project choice, not from the paper).

    ``steps`` 0 = scaled to the model (docs/MIMICRY.md): 100 for models working below 512² (tiny,
    toy; a few seconds on a CPU), 1000 at 512² and above — a project choice; set it to match
    a particular paper run. ``context.notes["impress"]`` gets the consistency loss before and after.
    """

    version = 1
    # --quick: a few optimisation steps
    QUICK = {'steps': 5}
    is_purification = True

    @dataclass(frozen=True)
    class Config:
        distance: Literal["lpips", "l2"] = "lpips"
        eps_lpips: float = 0.1
        eps_l2: float = 1e-3
        alpha: float = 0.1
        lr: float = 0.01
        steps: int = 0
        lpips_path: str = ""

    def __init__(self, config=None):
        super().__init__(config)
        self._lpips = None

    def resolved_steps(self, model) -> int:
        if self.config.steps > 0:
            return self.config.steps
        return 1000 if model.resolution >= 512 else 100

    def check_available(self) -> None:
        if self.config.distance != "lpips":
            return
        from cloakbench.core import weights

        if weights.find(weights.ALEXNET, self.config.lpips_path or None) is None:
            raise AttackUnavailable(
                "impress: LPIPS needs pretrained AlexNet weights; " + weights.missing_message(
                    weights.ALEXNET, self.config.lpips_path or None)
                + " Or choose impress.distance=l2 to use a pixel distance instead."
            )

    def _lpips_network(self, device):
        if self._lpips is None:
            from cloakbench.core import weights

            self.check_available()
            try:
                self._lpips = weights.build_lpips("alex", device, self.config.lpips_path or None)
            except weights.WeightsMissing as error:
                raise AttackUnavailable(f"impress: {error}") from None
        return self._lpips.to(device)

    def __call__(self, images: torch.Tensor, model, *, generator: torch.Generator | None = None,
                 context: AttackContext | None = None) -> torch.Tensor:
        check_images(images, self.name)
        config = self.config
        self.check_available()
        steps = self.resolved_steps(model)
        # Optimise in float32 even for a half-precision model (the model casts its own input).
        published = images.detach().to(model.device, torch.float32)
        if config.distance == "lpips":
            network = self._lpips_network(model.device)

            def distance(candidate: torch.Tensor) -> torch.Tensor:
                return network(candidate, published, normalize=True).flatten()
            budget = config.eps_lpips
        else:
            def distance(candidate: torch.Tensor) -> torch.Tensor:
                return ((candidate - published) ** 2).flatten(1).mean(dim=1)
            budget = config.eps_l2

        purified = published.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([purified], lr=config.lr)
        with torch.no_grad():
            before = consistency_loss(model, published)
        for _ in range(steps):
            consistency = consistency_loss(model, purified)
            penalty = torch.relu(distance(purified) - budget)
            loss = (consistency + config.alpha * penalty).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                purified.clamp_(0.0, 1.0)
        result = purified.detach()
        if context is not None:
            with torch.no_grad():
                after = consistency_loss(model, result)
            for key, value in {"steps": steps, "distance": config.distance,
                               "consistency_before": [float(v) for v in before],
                               "consistency_after": [float(v) for v in after]}.items():
                note(context, self.name, key, value)
        return result.to(device=images.device, dtype=torch.float32)
