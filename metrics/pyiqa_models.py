"""Learned no-reference quality models that run through the ``pyiqa`` package when it and its weights are here.

Chen et al.'s IQA-PyTorch (``pyiqa``) is the implementation the fine-tuning-attack papers'
quality numbers come from. Neither the package's weights nor those of CLIP ship in a
registry package, and pyiqa downloads them at first use; this module never lets it: a model
runs only when ``pyiqa`` is installed *and* every file it needs is already in pyiqa's cache
(``torch.hub.get_dir()/pyiqa``, :func:`cloakbench.core.weights.pyiqa_cache`). Otherwise the
metric is *unavailable*, naming the files, the folder and how to get them. On this project's
machines neither is present, so this code path is not exercised by the tests beyond that check.
"""

from __future__ import annotations

import importlib.util
from typing import ClassVar

import torch

from cloakbench.core import weights
from cloakbench.metrics.base import MetricUnavailable, NoReferenceMetric, check_images


class PyiqaMetric(NoReferenceMetric):
    """A pyiqa model by name, run only from its cached weights (never downloaded)."""

    pyiqa_name: ClassVar[str] = ""
    weight_specs: ClassVar[tuple[weights.WeightSpec, ...]] = ()

    def __init__(self, config=None):
        super().__init__(config)
        self._models: dict[str, object] = {}

    def check_available(self) -> None:
        missing = [spec for spec in self.weight_specs if weights.find(spec) is None]
        if importlib.util.find_spec("pyiqa") is None or missing:
            files = ", ".join(spec.filename for spec in (missing or self.weight_specs))
            raise MetricUnavailable(
                f"{self.name} runs through pyiqa from its cached weights: "
                + (
                    "the pyiqa package is not installed (pip install pyiqa); "
                    if importlib.util.find_spec("pyiqa") is None
                    else ""
                )
                + f"expected {files} in {weights.pyiqa_cache()}. This machine cannot download them; "
                + self.weight_specs[0].how_to_get
                + "."
            )

    def model(self, device: torch.device):
        key = str(device)
        if key not in self._models:
            self.check_available()
            import pyiqa

            self._models[key] = pyiqa.create_metric(self.pyiqa_name, device=device, as_loss=False)
        return self._models[key]

    def score(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.name)
        with torch.no_grad():
            return self.model(images.device)(images.float().clamp(0, 1)).reshape(-1).float().cpu()
