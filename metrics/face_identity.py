"""Anti-DreamBooth's face metrics of a fine-tuning attack's generations: FDFR and ISM.

Van Le et al., "Anti-DreamBooth: Protecting users from personalized text-to-image synthesis",
ICCV 2023, arXiv:2303.15433, Sec. 5.1; the definitions are their evaluation code
(``evaluations/ism_fdfr.py`` and ``evaluations/compute_idx_emb.py`` of VinAIResearch/Anti-DreamBooth):

- **FDFR** (face detection failure rate), ``ism_fdfr.py`` lines 95–110: the share of the
  generations in which the detector finds no face, ``fail / N`` (0 – 1; **higher = the
  protection broke more faces**, so ``higher_is_better = False`` from the mimic's side).
- **ISM** (identity score matching): the subject's identity is the mean of the embeddings of
  its clean photos, ``e_id = (1/M) Σ_m e(x_m)`` (``compute_idx_emb.py`` lines 24–43; a photo
  without a face is skipped); each generation with a face gives the cosine similarity of its
  *biggest* face's embedding to ``e_id`` (``ism_fdfr.py`` lines 28–31 and 79); ISM is the mean
  over the generations with a face (lines 101–109), undefined when none has one (line 110
  returns ``None``; here the row is marked unavailable with that reason). Unit: cosine;
  **lower = stronger protection**.

Detection and embedding come from a backend (``metrics/face_backends.py``): ``dlib`` by default
(its weights install from the package registry), ``arcface`` (RetinaFace + ArcFace through
deepface, exactly the reference's call) when its packages and weights are present. The row's
note names the backend. Both metrics apply only to subjects whose dataset category marks them
as faces (``category`` ``face``; docs/METRICS.md, "No-reference and face metrics").

Deliberate differences, with reasons: the default backend (dlib, not RetinaFace/ArcFace: the
only face models that install offline), so values and the same-person threshold are the
backend's own; ``compute_idx_emb.py`` line 35 counts a skipped photo in the mean's divisor, which
only rescales ``e_id`` and leaves every cosine unchanged, so it is not reproduced; the subject
photo's face is its biggest (the reference takes the first RetinaFace returns, the same face
for the one-person photos it is run on).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cloakbench.core.config import bounded
from cloakbench.metrics.base import (
    METRICS,
    Metric,
    MetricUnavailable,
    NoReferenceMetric,
    as_uint8_arrays,
    check_images,
)
from cloakbench.metrics.face_backends import FaceBackend, backend_for, biggest, cosine


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """The face backend (the ``--face-backend`` choice, set as ``--set fdfr.backend=...``).

    backend: ``dlib`` (default; weights from face-recognition-models) or ``arcface``
    (RetinaFace + ArcFace through deepface, Anti-DreamBooth's; unavailable without its weights).
    detector: dlib's ``cnn`` (MMOD, default) or ``hog``; upsample: dlib's image doublings.
    arcface_home: the folder holding ``.deepface/weights`` (default ``$DEEPFACE_HOME`` or ``~``).
    """

    backend: str = "dlib"
    detector: str = "cnn"
    upsample: int = bounded(1, 0, 3)
    arcface_home: str = ""


class _FaceMetric:
    """What ``fdfr`` and ``ism`` share: the configured backend, its availability and its note."""

    config: FaceConfig

    def backend(self) -> FaceBackend:
        return backend_for(
            self.config.backend,
            detector=self.config.detector,
            upsample=self.config.upsample,
            arcface_home=self.config.arcface_home,
        )

    def check_available(self) -> None:
        try:
            backend = self.backend()
        except ValueError as error:
            raise MetricUnavailable(str(error)) from None
        backend.check_available()

    def row_note(self) -> str:
        return self.backend().describe()

    def faces_of(self, images: torch.Tensor) -> list[list]:
        backend = self.backend()
        return [backend.faces(array) for array in as_uint8_arrays(images)]


@METRICS.register("fdfr")
class FDFR(_FaceMetric, NoReferenceMetric):
    """Face detection failure rate of generations, Anti-DreamBooth's (share without a face; higher = stronger protection)."""

    Config = FaceConfig
    scope = "generations"
    subjects = "face"
    higher_is_better = False
    unit = "ratio"
    needs = ("dlib face models from face-recognition-models (or RetinaFace/ArcFace weights: backend=arcface)",)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.name)
        faces = self.faces_of(images)
        failures = sum(1 for found in faces if not found)
        return torch.tensor(failures / len(faces), dtype=torch.float32)


@METRICS.register("ism")
class ISM(_FaceMetric, Metric):
    """Identity score matching, Anti-DreamBooth's: cosine of generated faces to the subject's mean embedding (lower = stronger)."""

    Config = FaceConfig
    scope = "subject"
    subjects = "face"
    higher_is_better = True
    unit = "cos"
    needs = (
        "the subject's clean photos",
        "dlib face models from face-recognition-models (or RetinaFace/ArcFace weights: backend=arcface)",
    )

    def subject_embedding(self, subject: torch.Tensor) -> np.ndarray:
        """``e_id``: the mean embedding of the biggest face of each subject photo that has one."""
        check_images(subject, self.name)
        embeddings = [face.embedding for face in map(biggest, self.faces_of(subject)) if face is not None]
        if not embeddings:
            raise MetricUnavailable(
                f"ism undefined: no face found in any of the subject's {subject.shape[0]} clean photo(s) "
                f"({self.row_note()})"
            )
        return np.mean(embeddings, axis=0)

    def similarities(self, generations: torch.Tensor, subject: torch.Tensor) -> list[float | None]:
        """Per generation: the cosine of its biggest face to ``e_id``, or ``None`` without a face."""
        check_images(generations, self.name)
        reference = self.subject_embedding(subject)
        found = [biggest(faces) for faces in self.faces_of(generations)]
        return [None if face is None else cosine(face.embedding, reference) for face in found]

    def __call__(self, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        values = [v for v in self.similarities(outputs, references) if v is not None]
        if not values:
            raise MetricUnavailable(
                f"ism undefined: no face found in any of the {outputs.shape[0]} generation(s) (FDFR 1; "
                f"Anti-DreamBooth's ism_fdfr.py line 110 returns None; {self.row_note()})"
            )
        return torch.tensor(float(np.mean(values)), dtype=torch.float32)
