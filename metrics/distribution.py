"""Distribution metrics between two image sets through torchmetrics: FID and KID.

- FID: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
  Nash Equilibrium", NeurIPS 2017, arXiv:1706.08500.
- KID: Bińkowski et al., "Demystifying MMD GANs", ICLR 2018, arXiv:1801.01401.

Both use torchmetrics' port of the TF Inception (torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``, 2048-d pool features), built offline by
:func:`cloakbench.core.weights.build_inception`. ``outputs`` are the generated set and ``references``
the concept set; both (N, 3, H, W) in [0, 1], quantised to uint8 (round, as the saved PNGs
are) because the Inception port takes uint8. Scope is ``set``: one scalar per pair of sets.
FID from a handful of images is dominated by its small-sample bias; KID is unbiased and
the better choice for small concept sets.
"""

from __future__ import annotations

import dataclasses

import torch

from cloakbench.core import weights
from cloakbench.core.config import bounded
from cloakbench.metrics.base import METRICS, Metric, MetricUnavailable

MIN_IMAGES = 2
FEATURE_LAYERS = (64, 192, 768, 2048)


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


class _InceptionSetMetric(Metric):
    scope = "set"
    needs = ("reference image set", "FID Inception weights in the torch hub cache")

    def __init__(self, config=None):
        super().__init__(config)
        self._networks: dict[str, torch.nn.Module] = {}

    def check_available(self) -> None:
        if self.config.features not in FEATURE_LAYERS:
            raise ValueError(f"{self.name}: features must be one of {FEATURE_LAYERS}, got {self.config.features}")
        try:
            from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
        except ImportError:  # pragma: no cover - torchmetrics layout change
            _TORCH_FIDELITY_AVAILABLE = False
        if not _TORCH_FIDELITY_AVAILABLE:
            raise MetricUnavailable(f"{self.name} needs the torch-fidelity package (pip install torch-fidelity)")
        path = self.config.weights or None
        if weights.find(weights.INCEPTION, path) is None:
            raise MetricUnavailable(weights.missing_message(weights.INCEPTION, path))

    def network(self, device: torch.device) -> torch.nn.Module:
        key = str(device)
        if key not in self._networks:
            self.check_available()
            self._networks[key] = weights.build_inception(
                device, self.config.weights or None, features=self.config.features
            )
        return self._networks[key]

    def _check_sets(self, outputs: torch.Tensor, references: torch.Tensor) -> None:
        if len(outputs) < MIN_IMAGES or len(references) < MIN_IMAGES:
            raise ValueError(
                f"{self.name} needs at least {MIN_IMAGES} images per set; got "
                f"{len(outputs)} generated and {len(references)} reference images"
            )


@METRICS.register("fid")
class FID(_InceptionSetMetric):
    """Fréchet Inception distance between generated and reference sets (lower = closer)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        features: int = bounded(2048, 64, 2048)  # Inception layer: 2048 (pool3, the standard), or 768 / 192 / 64
        weights: str = ""  # optional path to weights-inception-2015-12-05-6726825d.pth

    higher_is_better = False

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self._check_sets(outputs, references)
        metric = FrechetInceptionDistance(feature=self.network(outputs.device)).to(outputs.device)
        metric.update(_as_uint8(references), real=True)
        metric.update(_as_uint8(outputs), real=False)
        return metric.compute().float()


@METRICS.register("kid")
class KID(_InceptionSetMetric):
    """Kernel Inception distance (polynomial-kernel MMD², subset mean) between two sets (lower = closer)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        subsets: int = bounded(100, 1, 100_000)
        subset_size: int = bounded(1000, 2, 1_000_000)  # capped at the smaller set's size
        features: int = bounded(2048, 64, 2048)  # Inception layer: 2048 (pool3, the standard), or 768 / 192 / 64
        weights: str = ""

    higher_is_better = False

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        from torchmetrics.image.kid import KernelInceptionDistance

        self._check_sets(outputs, references)
        subset_size = min(self.config.subset_size, len(outputs), len(references))
        metric = KernelInceptionDistance(
            feature=self.network(outputs.device), subsets=self.config.subsets, subset_size=subset_size
        ).to(outputs.device)
        metric.update(_as_uint8(references), real=True)
        metric.update(_as_uint8(outputs), real=False)
        mean, _std = metric.compute()
        return mean.float()
