"""Face detection and identity embeddings for the face metrics (``fdfr``, ``ism``), offline.

Two backends, picked by the metrics' ``backend`` setting (``--set fdfr.backend=arcface``):

- ``dlib`` (default): dlib's models as the PyPI package ``face-recognition-models`` 0.3.0 ships
  them (the weights are inside the package; ``dlib-bin`` is dlib without a compiler). Detector:
  ``cnn``, dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``; King, "Max-Margin
  Object Detection", arXiv:1502.00046), or ``hog``, dlib's HOG + linear SVM frontal detector
  (built into dlib, no file), both with ``upsample`` image doublings (1, as dlib's examples and
  deepface's dlib wrapper run them: Anti-DreamBooth ``evaluations/deepface/deepface/detectors/
  DlibWrapper.py`` line 54) and dlib's threshold, score > 0. Embedding: dlib's ResNet
  (``dlib_face_recognition_resnet_model_v1.dat``, 128-d, 99.38 % on LFW) on the face chip dlib
  aligns with the 5-point landmarks (``shape_predictor_5_face_landmarks.dat``), through
  ``compute_face_descriptor(image, shape)``, dlib's own documented call.
- ``arcface``: what Anti-DreamBooth ran (``evaluations/ism_fdfr.py`` lines 19–23):
  ``DeepFace.represent(model_name="ArcFace", detector_backend="retinaface", align=True,
  enforce_detection=True)``, RetinaFace at its threshold 0.9 (``evaluations/deepface/deepface/
  detectors/RetinaFaceWrapper.py`` line 19). It needs the ``deepface`` and ``retina-face``
  packages (TensorFlow) and their weights ``retinaface.h5`` and ``arcface_weights.h5`` in
  ``$DEEPFACE_HOME/.deepface/weights/`` (``~`` without the variable; the place Anti-DreamBooth's
  ``evaluations/readme.md`` names). Neither installs with its weights from a package registry,
  so on this machine the backend is *unavailable* with that reason, never replaced silently.

Deliberate difference (documented in docs/METRICS.md): the default backend is dlib's, not
RetinaFace + ArcFace, because only dlib's weights install offline. The numbers are therefore not
comparable with the paper's: each backend has its own same-person threshold
(:attr:`FaceBackend.same_person_cosine`), from the deepface copy inside Anti-DreamBooth
(``evaluations/deepface/deepface/commons/distance.py`` lines 36–37: ArcFace cosine distance
0.68, Dlib 0.07, i.e. cosine similarity ≥ 0.32 and ≥ 0.93).

Images are ``(H, W, 3)`` uint8 RGB arrays. Detections of the same pixels are cached in memory
(by the pixels' hash and the backend's settings), so ``fdfr`` and ``ism`` on the same
generations detect each face once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from collections import OrderedDict
from functools import cache
from pathlib import Path

import numpy as np

from cloakbench.core import weights
from cloakbench.metrics.base import MetricUnavailable

BACKENDS = ("dlib", "arcface")
DLIB_DETECTORS = ("cnn", "hog")
DLIB_FILES = {
    "cnn": "mmod_human_face_detector.dat",
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}
DLIB_INSTALL = "pip install -e '.[metrics]' (face-recognition-models==0.3.0 and dlib-bin)"
ARCFACE_FILES = (weights.RETINAFACE.filename, weights.ARCFACE.filename)
ARCFACE_INSTALL = (
    "pip install deepface retina-face (TensorFlow) and copy retinaface.h5 and arcface_weights.h5 "
    "(deepface's v1.0 model release) from a machine with network"
)


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: its box area in pixels², the detector's score and its identity embedding."""

    area: float
    confidence: float
    embedding: np.ndarray = dataclasses.field(compare=False)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """``a·b / (‖a‖ ‖b‖)``, as ``F.cosine_similarity`` in Anti-DreamBooth ``evaluations/ism_fdfr.py`` line 79."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def biggest(faces: list[Face]) -> Face | None:
    """The face with the largest box (``ism_fdfr.py`` lines 28–31), or ``None``."""
    return max(faces, key=lambda face: face.area) if faces else None


class FaceBackend:
    """Detects faces in an RGB uint8 image and embeds each (``faces``); says why it cannot run here."""

    name = ""
    #: cosine similarity at or above which two embeddings are the same person (the backend's own threshold)
    same_person_cosine = 1.0
    threshold_source = ""

    def check_available(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the rows' note: which models computed the value."""
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> list[Face]:
        raise NotImplementedError

    def key(self) -> str:
        return self.describe()

    def faces(self, image: np.ndarray) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"face backend {self.name}: expected an (H, W, 3) uint8 image, got {image.shape}")
        key = (self.key(), hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(), image.shape)
        if key not in _DETECTIONS:
            _DETECTIONS[key] = self.detect(np.ascontiguousarray(image))
            while len(_DETECTIONS) > _CACHE_SIZE:
                _DETECTIONS.popitem(last=False)
        return _DETECTIONS[key]


_CACHE_SIZE = 512
_DETECTIONS: OrderedDict = OrderedDict()


# -- dlib ------------------------------------------------------------------------------------
def dlib_model_folder() -> Path | None:
    """``face_recognition_models/models`` of the installed package, found without importing it.

    (The package's ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ship;
    only its files are needed.)
    """
    found = importlib.util.find_spec("face_recognition_models")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / "models"


@cache
def _dlib_models(folder: str, detector: str):
    import dlib

    root = Path(folder)
    if detector == "cnn":
        detect = dlib.cnn_face_detection_model_v1(str(root / DLIB_FILES["cnn"]))
    else:
        detect = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(root / DLIB_FILES["landmarks"]))
    embed = dlib.face_recognition_model_v1(str(root / DLIB_FILES["embedding"]))
    return detect, landmarks, embed


class DlibBackend(FaceBackend):
    name = "dlib"
    same_person_cosine = 1 - 0.07
    threshold_source = (
        "deepface's Dlib cosine distance 0.07 (Anti-DreamBooth evaluations/deepface/deepface/commons/distance.py:37)"
    )

    def __init__(self, detector: str = "cnn", upsample: int = 1):
        if detector not in DLIB_DETECTORS:
            raise ValueError(f"face detector must be one of {', '.join(DLIB_DETECTORS)}, got {detector!r}")
        self.detector = detector
        self.upsample = upsample

    def check_available(self) -> None:
        folder = dlib_model_folder()
        if folder is None:
            raise MetricUnavailable(f"the dlib face backend needs the face-recognition-models package: {DLIB_INSTALL}")
        needed = [DLIB_FILES["landmarks"], DLIB_FILES["embedding"]]
        if self.detector == "cnn":
            needed.append(DLIB_FILES["cnn"])
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise MetricUnavailable(f"dlib face models {', '.join(missing)} missing from {folder}; {DLIB_INSTALL}")
        if importlib.util.find_spec("dlib") is None:
            raise MetricUnavailable(f"the dlib face backend needs dlib: {DLIB_INSTALL}")

    def describe(self) -> str:
        import dlib

        detector = DLIB_FILES["cnn"] if self.detector == "cnn" else "HOG frontal detector"
        return (
            f"backend dlib {dlib.__version__}: {detector} (upsample {self.upsample}), "
            f"{DLIB_FILES['landmarks']}, {DLIB_FILES['embedding']}"
        )

    def key(self) -> str:
        return f"dlib:{self.detector}:{self.upsample}"

    def detect(self, image: np.ndarray) -> list[Face]:
        self.check_available()
        detect, landmarks, embed = _dlib_models(str(dlib_model_folder()), self.detector)
        if self.detector == "cnn":
            found = [(d.rect, float(d.confidence)) for d in detect(image, self.upsample)]
        else:
            rects, scores, _ = detect.run(image, self.upsample)
            found = list(zip(rects, (float(s) for s in scores)))
        faces = []
        for rect, score in found:
            shape = landmarks(image, rect)
            embedding = np.asarray(embed.compute_face_descriptor(image, shape), dtype=np.float64)
            faces.append(Face(float(rect.width() * rect.height()), score, embedding))
        return faces


# -- ArcFace through deepface, as Anti-DreamBooth ---------------------------------------------
def deepface_weights_folder(home: str = "") -> Path:
    """Where deepface reads its weights: ``home/.deepface/weights``, else ``$DEEPFACE_HOME`` or ``~`` (core.weights)."""
    if home:
        return Path(home).expanduser() / ".deepface" / "weights"
    return weights.deepface_weights()


class ArcFaceBackend(FaceBackend):
    name = "arcface"
    same_person_cosine = 1 - 0.68
    threshold_source = (
        "deepface's ArcFace cosine distance 0.68 (Anti-DreamBooth evaluations/deepface/deepface/commons/distance.py:36)"
    )

    def __init__(self, home: str = ""):
        self.home = home

    def check_available(self) -> None:
        folder = deepface_weights_folder(self.home)
        missing = [name for name in ARCFACE_FILES if not (folder / name).is_file()]
        packages = [name for name in ("deepface", "retinaface") if importlib.util.find_spec(name) is None]
        if missing or packages:
            parts = []
            if missing:
                parts.append(f"{', '.join(missing)} not in {folder}")
            if packages:
                parts.append(f"package(s) {', '.join(packages)} not installed")
            raise MetricUnavailable(
                f"the arcface face backend (RetinaFace + ArcFace, as Anti-DreamBooth) is unavailable: "
                f"{'; '.join(parts)}. This machine cannot download them; {ARCFACE_INSTALL} "
                f"(or set DEEPFACE_HOME / arcface_home to the folder above .deepface)"
            )

    def describe(self) -> str:
        return f"backend arcface: deepface ArcFace + RetinaFace (threshold 0.9), weights {deepface_weights_folder(self.home)}"

    def key(self) -> str:
        return f"arcface:{deepface_weights_folder(self.home)}"

    def detect(self, image: np.ndarray) -> list[Face]:
        self.check_available()
        if self.home:
            os.environ["DEEPFACE_HOME"] = str(Path(self.home).expanduser())
        from deepface import DeepFace

        try:
            found = DeepFace.represent(
                img_path=np.ascontiguousarray(image[:, :, ::-1]),  # deepface takes BGR arrays
                model_name="ArcFace",
                enforce_detection=True,
                detector_backend="retinaface",
                align=True,
            )
        except ValueError:  # deepface's "Face could not be detected" (the reference catches every error)
            return []
        faces = []
        for entry in found:
            area = entry["facial_area"]
            faces.append(
                Face(
                    float(area["w"] * area["h"]),
                    float(entry.get("face_confidence", float("nan"))),
                    np.asarray(entry["embedding"], dtype=np.float64),
                )
            )
        return faces


def backend_for(backend: str, *, detector: str = "cnn", upsample: int = 1, arcface_home: str = "") -> FaceBackend:
    """The configured backend; an unknown name is a ValueError naming the choices."""
    if backend == "dlib":
        return DlibBackend(detector, upsample)
    if backend == "arcface":
        return ArcFaceBackend(arcface_home)
    raise ValueError(f"face backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
