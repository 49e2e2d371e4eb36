"""BRISQUE, a no-reference quality score (Mittal, Moorthy and Bovik, "No-Reference Image Quality
Assessment in the Spatial Domain", IEEE TIP 21(12), 2012), through the PyPI ``brisque`` package
(0.2.0) and the SVM it ships (``brisque/models/svm.txt`` and ``normalize.pickle``).

The score: the mean-subtracted contrast-normalised (MSCN) coefficients of the grey image,
``(I − μ) / (σ + 1/255)`` with a 7×7 Gaussian window (σ = 7/6), and their four neighbour
products are fitted with (asymmetric) generalised Gaussians; the 18 fitted parameters at full
and at half size (36 features), scaled to [−1, 1], go through the package's support-vector
regressor trained on LIVE's distorted images and human opinion scores. **Lower = better
quality** (0 ≈ pristine, ~100 = badly distorted); unitless.

As Anti-DreamBooth scores generations (``evaluations/brisques.py`` lines 16–27 of
VinAIResearch/Anti-DreamBooth: ``BRISQUE(url=False).score(image)`` per generated image, then
the mean): each ``(3, H, W)`` image in [0, 1] is rounded to 8 bits (as the saved PNG) and
handed to the package as an ``(H, W, 3)`` uint8 array, which is what ``score`` makes of the
PIL image the reference passes.

One deliberate difference, a fix: brisque 0.2.0's ``scale_features`` calls ``float()`` on
features that its own fit returns as one-element arrays, which NumPy ≥ 2.4 refuses
("only 0-dimensional arrays can be converted"). :class:`_PackageScorer` overrides that one
method to read each feature's single element; the features, the scaling formula
``−1 + 2 (f − min) / (max − min)`` and the SVM prediction are the package's own
(``tests/test_metrics_noreference.py`` checks the value against the package's steps run
independently). The package needs OpenCV (``brisque[opencv-python-headless]``,
in the ``metrics`` extra). Its normalisation file is a pickle shipped inside the package
itself, read by the package, never a user file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from cloakbench.metrics.base import METRICS, MetricUnavailable, NoReferenceMetric, as_uint8_arrays, check_images

#: The files the package's default model reads (``brisque/models/``).
MODEL_FILES = ("svm.txt", "normalize.pickle")
INSTALL = "pip install -e '.[metrics]' (brisque[opencv-python-headless]==0.2.0)"


def model_folder() -> Path | None:
    """``brisque/models`` of the installed package, found without importing it (no OpenCV needed)."""
    found = importlib.util.find_spec("brisque")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / "models"


def _package_scorer():
    """``brisque.BRISQUE(url=False)`` with ``scale_features`` reading one-element features (NumPy ≥ 2.4)."""
    import numpy as np
    from brisque import BRISQUE as PackageBRISQUE

    class _PackageScorer(PackageBRISQUE):
        def scale_features(self, features):
            flat = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features], dtype=np.float64)
            return super().scale_features(flat)

    return _PackageScorer(url=False)


@METRICS.register("brisque")
class BRISQUE(NoReferenceMetric):
    """BRISQUE no-reference quality (Mittal et al., IEEE TIP 2012), the brisque package's SVM (lower = better quality)."""

    higher_is_better = False
    unit = ""
    needs = ("the brisque package's SVM model (brisque/models/svm.txt)",)
    scope = "image"

    def __init__(self, config=None):
        super().__init__(config)
        self._scorer = None

    def check_available(self) -> None:
        folder = model_folder()
        if folder is None:
            raise MetricUnavailable(f"brisque needs the brisque package and its SVM model: {INSTALL}")
        missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
        if missing:
            raise MetricUnavailable(f"brisque: {', '.join(missing)} missing from {folder}; reinstall: {INSTALL}")
        if importlib.util.find_spec("cv2") is None or importlib.util.find_spec("libsvm") is None:
            raise MetricUnavailable(f"brisque needs OpenCV and libsvm beside the brisque package: {INSTALL}")

    def row_note(self) -> str:
        from importlib.metadata import version

        return f"brisque {version('brisque')}, its shipped SVM (svm.txt)"

    def scorer(self):
        """The package's scorer with its shipped model, built once."""
        if self._scorer is None:
            self.check_available()
            self._scorer = _package_scorer()
        return self._scorer

    def score(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.name)
        scorer = self.scorer()
        values = [float(scorer.score(array)) for array in as_uint8_arrays(images)]
        return torch.tensor(values, dtype=torch.float32)
