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

from cloakbench.core.config import bounded
from cloakbench.core.images import check_images
from cloakbench.mimicry.base import MIMICRY, AttackContext, AttackUnavailable, Mimicry
from cloakbench.mimicry.common import note


def consistency_loss(
    model, images: torch.Tensor, latent: str = "mean", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image ``mean((D(E(x)) − x)²)``, shape ``(N,)``; differentiable w.r.t. ``images``.

    ``D`` here is the decoder without :meth:`LDM.decode`'s final clamp to ``[0, 1]``: the
    clamp would zero the gradient wherever the reconstruction overshoots.
    """
    latents = model.encode(images, mode=latent, generator=generator)
    decoded = model.vae.decode(model.unscale_latents(latents)).sample
    reconstruction = ((decoded + 1.0) / 2.0).to(images.dtype)
    return ((reconstruction - images) ** 2).flatten(1).mean(dim=1)


@MIMICRY.register("impress")
class Impress(Mimicry):
    """IMPRESS (Cao et al., arXiv:2310.19248): minimise ‖D(E(x_p)) − x_p‖² + α·max(LPIPS(x_p, x) − ε, 0), 3000 Adam steps in [−1, 1].

    As the authors' code runs it (AAAAAAsuka/Impress ``impress.py:7-29`` called from
    ``glaze_pur.py:51-60``, settings of their run script ``scripts/new/test_all.sh:12-16``):

    - everything happens in the model's range ``[−1, 1]``: the published image ``x`` is
      mapped by ``preprocess`` to ``X_adv = 2x − 1`` (glaze_pur.py:51) and the optimised variable is
      ``X_p`` in those units, so Adam's step of ≈ ``lr`` per pixel is ``lr/2`` on ``[0, 1]``
      images (optimising ``[0, 1]`` pixels with the same ``lr``, as version 2 did, took twice
      the authors' step);
    - ``X_p`` starts at ``X_adv + pur_noise·ε`` (impress.py:9), ``pur_noise`` 0.1 as their run
      script and README set it (test_all.sh:16; README "pur_noise … default is 0.1" for Glaze),
      i.e. σ 0.05 on ``[0, 1]``; their README gives 0.05 (and ``pur_lr`` 0.005) against
      PhotoGuard. The argparse default 0 (glaze_pur.py:95) is not what they ran. Not clamped
      before the first step (nor is it in theirs);
    - the consistency term is ``MSELoss(vae(X_p).sample, X_p)`` (impress.py:17-19) — the VAE
      round trip with the posterior mode, the mean squared error in ``[−1, 1]``;
    - the distance term is ``max(LPIPS(X_p, X_adv) − ε, 0)`` (impress.py:20-21), LPIPS on
      ``[−1, 1]`` inputs (lpips' ``normalize=False``) with a **VGG** backbone
      (``lpips.LPIPS(net='vgg')``, impress.py:12, although their variable is named
      ``loss_fn_alex``), ``eps_lpips`` 0.1, weight ``alpha`` 0.1;
    - Adam with ``lr`` 0.01 and ``eps`` 1e-5, the learning rate cosine-annealed to 1e-5 over the
      ``steps`` = 3000 iterations (impress.py:13-14);
    - ``X_p`` clamped to ``[−1, 1]`` after every step (impress.py:26), returned as
      ``(X_p/2 + 0.5).clamp(0, 1)`` (glaze_pur.py:62).

    Each image is optimised independently (losses summed over the batch; they run batch 1).

    ``distance``: ``"lpips"`` (theirs) needs the torchvision VGG16 weights for ``lpips_net``
    "vgg" (``vgg16-397923af.pth`` in ``torch.hub.get_dir()/checkpoints``, or ``lpips_path``) —
    AlexNet (``alexnet-owt-7be5be79.pth``) for ``lpips_net`` "alex", the paper's choice; without
    them the attack raises :class:`AttackUnavailable` naming the file, never falls back on its own.
    ``"l2"`` (explicit opt-in) uses the mean squared pixel error on ``[0, 1]`` with budget
    ``eps_l2`` 1e-3 (≈ PSNR 30 dB; a project choice, not from the paper).

    Deliberate differences: they run the VAE in half precision; here it runs in the model's
    dtype. Their initial noise comes from torch's global generator; here from the run's.
    ``--quick`` runs 5 steps. ``context.notes["impress"]`` gets the consistency loss (on
    ``[0, 1]``) before and after.
    """

    version = 3
    # --quick: a few optimisation steps
    QUICK = {"steps": 5}
    is_purification = True
    #: MSE on [-1, 1] images is 4x the MSE on [0, 1] images (the authors' range).
    MODEL_RANGE_SCALE = 4.0

    @dataclass(frozen=True)
    class Config:
        distance: Literal["lpips", "l2"] = "lpips"
        lpips_net: Literal["vgg", "alex"] = "vgg"
        eps_lpips: float = bounded(0.1, 0.0, 10.0)
        eps_l2: float = bounded(1e-3, 0.0, 1.0)
        alpha: float = bounded(0.1, 0.0, 1000.0)
        lr: float = bounded(0.01, 0.0, 10.0, low_open=True)
        lr_min: float = bounded(1e-5, 0.0, 10.0)
        adam_eps: float = bounded(1e-5, 0.0, 1.0, low_open=True)
        steps: int = bounded(3000, 1, 100000)
        #: σ of the initial Gaussian noise in [−1, 1] units (test_all.sh:16; 0.05 in their PhotoGuard runs).
        pur_noise: float = bounded(0.1, 0.0, 2.0)
        lpips_path: str = ""

    def __init__(self, config=None):
        super().__init__(config)
        self._lpips = None

    def check_available(self) -> None:
        if self.config.distance != "lpips":
            return
        from cloakbench.core import weights

        backbone = weights.LPIPS_BACKBONES[self.config.lpips_net][0]
        if weights.find(backbone, self.config.lpips_path or None) is None:
            raise AttackUnavailable(
                f"impress: LPIPS-{self.config.lpips_net} needs pretrained {backbone.name} weights; "
                + weights.missing_message(backbone, self.config.lpips_path or None)
                + " Or choose impress.distance=l2 to use a pixel distance instead."
            )

    def _lpips_network(self, device):
        if self._lpips is None:
            from cloakbench.core import weights

            self.check_available()
            try:
                self._lpips = weights.build_lpips(self.config.lpips_net, device, self.config.lpips_path or None)
            except weights.WeightsMissing as error:
                raise AttackUnavailable(f"impress: {error}") from None
        return self._lpips.to(device)

    def __call__(
        self,
        images: torch.Tensor,
        model,
        *,
        generator: torch.Generator | None = None,
        context: AttackContext | None = None,
    ) -> torch.Tensor:
        check_images(images, self.name)
        config = self.config
        self.check_available()
        steps = config.steps
        # Optimise in float32 even for a half-precision model (the model casts its own input).
        published = images.detach().to(model.device, torch.float32)
        published_model_range = published * 2.0 - 1.0  # the authors' X_adv (glaze_pur.py:51)
        if config.distance == "lpips":
            network = self._lpips_network(model.device)

            def distance(candidate: torch.Tensor) -> torch.Tensor:
                # [-1, 1] in, as lpips expects without normalize (impress.py:20).
                return network(candidate, published_model_range).flatten()

            budget = config.eps_lpips
        else:

            def distance(candidate: torch.Tensor) -> torch.Tensor:
                return (((candidate - published_model_range) / 2.0) ** 2).flatten(1).mean(dim=1)

            budget = config.eps_l2

        noise = torch.randn(published.shape, generator=generator, device=published.device)
        purified = (published_model_range + config.pur_noise * noise).requires_grad_(True)
        optimizer = torch.optim.Adam([purified], lr=config.lr, eps=config.adam_eps)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=config.lr_min)
        with torch.no_grad():
            before = consistency_loss(model, published)
        for _ in range(steps):
            # MSE(D(E(X_p)), X_p) on [-1, 1] = 4 x the same error on [0, 1] (impress.py:19).
            consistency = self.MODEL_RANGE_SCALE * consistency_loss(model, (purified + 1.0) / 2.0)
            penalty = torch.relu(distance(purified) - budget)
            loss = (consistency + config.alpha * penalty).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                purified.clamp_(-1.0, 1.0)
        result = ((purified.detach() + 1.0) / 2.0).clamp(0.0, 1.0)
        if context is not None:
            with torch.no_grad():
                after = consistency_loss(model, result)
            for key, value in {
                "steps": steps,
                "distance": config.distance,
                "pur_noise": config.pur_noise,
                "consistency_before": [float(v) for v in before],
                "consistency_after": [float(v) for v in after],
            }.items():
                note(context, self.name, key, value)
        return result.to(device=images.device, dtype=torch.float32)
