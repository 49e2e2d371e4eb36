"""The offline learned metrics on real photos that ship with scikit-image (docs/METRICS.md,
"No-reference and face metrics"): BRISQUE against distortions and against the brisque package's
own steps, Anti-DreamBooth's FDFR and ISM on dlib's models, the arcface backend's absence and
its glue, and the harness rows (face subjects only).

The dlib detector runs with ``upsample=0`` here to keep the suite fast (the 512² astronaut's
face is ~95 px, found without doubling); the default, 1, is what the runs use.
"""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data

from cloakbench.metrics import METRICS, MetricUnavailable
from cloakbench.metrics.face_backends import _DETECTIONS, ArcFaceBackend, DlibBackend
from cloakbench.metrics.face_identity import FDFR, ISM, FaceConfig

pytest.importorskip("dlib", reason="the metrics extra is not installed: pip install -e '.[metrics]'")
pytest.importorskip("cv2", reason="the metrics extra is not installed: pip install -e '.[metrics]'")


def tensor(array: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).unsqueeze(0).float() / 255


def distorted(photo: np.ndarray) -> dict[str, np.ndarray]:
    image = Image.fromarray(photo)
    noise = np.random.default_rng(0).normal(0, 25, photo.shape)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=10)
    return {
        "blurred": np.asarray(image.filter(ImageFilter.GaussianBlur(3))),
        "noised": np.clip(photo + noise, 0, 255).astype(np.uint8),
        "jpeg-q10": np.asarray(Image.open(buffer).convert("RGB")),
    }


# -- BRISQUE ------------------------------------------------------------------------------------
def test_brisque_scores_a_clean_photo_better_than_its_distorted_copies():
    brisque = METRICS.get("brisque")()
    assert brisque.kind() == "no-reference" and brisque.higher_is_better is False
    photo = data.astronaut()
    clean = float(brisque.score(tensor(photo)))
    for name, copy in distorted(photo).items():
        worse = float(brisque.score(tensor(copy)))
        assert worse > clean + 10, f"{name}: BRISQUE {worse:.1f} not clearly above the clean photo's {clean:.1f}"


def test_brisque_equals_the_packages_own_value():
    """The package's steps (brisque/brisque.py, BRISQUE.score), run here on the PIL image as
    Anti-DreamBooth's brisques.py passes it; only the features are read as floats first
    (NumPy >= 2.4 refuses float() of the one-element arrays the package's fit returns)."""
    import cv2
    import skimage.color
    from brisque import BRISQUE as PackageBRISQUE

    photo = data.coffee()
    package = PackageBRISQUE(url=False)
    image = package.remove_alpha_channel(Image.fromarray(photo))
    gray = skimage.color.rgb2gray(image)
    features = package.calculate_brisque_features(gray, kernel_size=7, sigma=7 / 6)
    half = cv2.resize(gray, None, fx=1 / 2, fy=1 / 2, interpolation=cv2.INTER_CUBIC)
    features = np.concatenate((features, package.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)))
    expected = package.calculate_image_quality_score([np.ravel(f)[0] for f in features])
    assert float(METRICS.get("brisque")().score(tensor(photo))) == pytest.approx(expected, rel=1e-5)


def test_brisque_of_a_batch_is_one_value_per_image():
    photos = torch.cat([tensor(data.astronaut()[:256, :256]), tensor(data.chelsea()[:256, :256])])
    values = METRICS.get("brisque")().score(photos)
    assert values.shape == (2,) and torch.isfinite(values).all() and values[0] != values[1]


# -- faces: dlib ----------------------------------------------------------------------------------
FAST = FaceConfig(upsample=0)


def test_astronaut_has_one_face_and_chelsea_none():
    backend = DlibBackend("cnn", upsample=0)
    assert len(backend.faces(data.astronaut())) == 1
    assert backend.faces(data.chelsea()) == []
    assert float(FDFR(FAST).score(tensor(data.chelsea()))) == 1.0
    assert float(FDFR(FAST).score(tensor(data.astronaut()))) == 0.0


def test_ism_of_the_astronaut_to_its_flipped_and_cropped_copies_passes_the_same_person_threshold():
    photo = data.astronaut()
    crop = np.asarray(Image.fromarray(photo[0:260, 90:350]).resize((230, 230), Image.Resampling.BICUBIC))
    copies = [tensor(photo[:, ::-1]), tensor(crop), tensor(crop[:, ::-1])]  # sizes differ: one call each
    ism = ISM(FAST)
    similarities = [value for copy in copies for value in ism.similarities(copy, tensor(photo))]
    threshold = DlibBackend.same_person_cosine
    assert threshold == pytest.approx(0.93)  # deepface's Dlib cosine distance 0.07
    assert all(value is not None and threshold <= value < 1 for value in similarities), similarities
    assert float(ism(copies[1], tensor(photo))) == pytest.approx(similarities[1])
    # A subject photo without a face (coffee): the identity is undefined, said, not a number.
    with pytest.raises(MetricUnavailable, match="no face found in any of the subject"):
        ism(copies[1], tensor(data.coffee()))
    with pytest.raises(MetricUnavailable, match="no face found in any of the 1 generation"):
        ism(tensor(data.chelsea()), tensor(photo))


def test_fdfr_is_the_share_of_generations_without_a_face():
    photo = data.astronaut()
    generations = torch.cat(
        [tensor(photo[:300, :300]), tensor(data.chelsea()[:300, :300]), tensor(photo[:300, :300][:, ::-1])]
    )
    assert float(FDFR(FAST).score(generations)) == pytest.approx(1 / 3)


# -- faces: the arcface backend -------------------------------------------------------------------
def test_arcface_backend_is_unavailable_with_files_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    fdfr = METRICS.get("fdfr").from_overrides({"backend": "arcface"})
    ready, reason = fdfr.availability()
    assert not ready
    assert "retinaface.h5" in reason and "arcface_weights.h5" in reason
    assert str(tmp_path / ".deepface" / "weights") in reason
    ready, reason = METRICS.get("ism").from_overrides({"backend": "nonsense"}).availability()
    assert not ready and "dlib, arcface" in reason


def test_arcface_backend_calls_deepface_as_anti_dreambooth(tmp_path, monkeypatch):
    """With its weights and packages present, the backend makes the reference's call and keeps the biggest face."""
    folder = tmp_path / ".deepface" / "weights"
    folder.mkdir(parents=True)
    for name in ("retinaface.h5", "arcface_weights.h5"):
        (folder / name).write_bytes(b"stand-in")
    calls = []

    def represent(**kwargs):
        calls.append(kwargs)
        if kwargs["img_path"].mean() < 100:
            raise ValueError("Face could not be detected")
        return [
            {"embedding": [1.0, 0.0], "facial_area": {"x": 0, "y": 0, "w": 10, "h": 10}, "face_confidence": 0.99},
            {"embedding": [0.6, 0.8], "facial_area": {"x": 0, "y": 0, "w": 30, "h": 30}, "face_confidence": 0.95},
        ]

    fake = types.ModuleType("deepface")
    fake.DeepFace = types.SimpleNamespace(represent=represent)
    monkeypatch.setitem(sys.modules, "deepface", fake)
    monkeypatch.setitem(sys.modules, "retinaface", types.ModuleType("retinaface"))
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: object() if name in ("deepface", "retinaface") else None
    )
    _DETECTIONS.clear()
    backend = ArcFaceBackend(str(tmp_path))
    backend.check_available()
    bright = np.full((8, 8, 3), 200, np.uint8)
    faces = backend.faces(bright)
    assert [face.area for face in faces] == [100.0, 900.0]
    assert calls[0]["model_name"] == "ArcFace" and calls[0]["detector_backend"] == "retinaface"
    assert calls[0]["align"] is True and calls[0]["enforce_detection"] is True
    assert backend.faces(np.zeros((8, 8, 3), np.uint8)) == []
    ism = ISM(FaceConfig(backend="arcface", arcface_home=str(tmp_path)))
    # Subject: biggest face (0.6, 0.8); generation: the same -> cosine 1.
    assert float(ism(tensor(bright), tensor(bright))) == pytest.approx(1.0)
    _DETECTIONS.clear()


# -- the harness rows ------------------------------------------------------------------------------
def test_rows_carry_face_metrics_only_for_face_subjects_and_name_the_backend():
    from cloakbench.bench.noreference import noreference_rows

    metrics = [METRICS.get("brisque")(), FDFR(FAST), ISM(FAST)]
    availability = {m.name: m.availability() for m in metrics}
    photo = data.astronaut()[:300, :300]
    generations = torch.cat([tensor(photo), tensor(data.chelsea()[:300, :300])])
    subject = tensor(photo[:, ::-1])
    base = {"protection": "none", "note": ""}
    rows = noreference_rows(
        metrics, availability, base, generations, subject=subject, categories=["face"], generations=True
    )
    by_metric = {}
    for row in rows:
        by_metric.setdefault(row["metric"], []).append(row)
    assert [r["setting"] for r in by_metric["brisque"]] == ["generation 0", "generation 1"]
    assert all(r["pair"] == "generations" and r["status"] == "ok" for r in by_metric["brisque"])
    (fdfr,) = by_metric["fdfr"]
    assert fdfr["value"] == pytest.approx(0.5) and "backend dlib" in fdfr["note"]
    (ism,) = by_metric["ism"]
    assert ism["pair"] == "generations_vs_concept" and ism["value"] >= DlibBackend.same_person_cosine
    assert "backend dlib" in ism["note"]
    not_faces = noreference_rows(
        metrics, availability, base, generations, subject=subject, categories=["landscape"], generations=True
    )
    assert {r["metric"] for r in not_faces} == {"brisque"}
    protected = noreference_rows(metrics, availability, base, tensor(photo))
    assert [(r["metric"], r["pair"]) for r in protected] == [("brisque", "protected")]
    flat = noreference_rows(metrics, availability, base, torch.full((1, 3, 32, 32), 0.5))
    assert flat[0]["status"] == "unavailable" and flat[0]["value"] is None and "undefined" in flat[0]["note"]


def test_bench_list_shows_each_metrics_kind():
    from typer.testing import CliRunner

    from cloakbench.bench.cli.app import app

    result = CliRunner().invoke(app, ["list", "metrics"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    assert "no-reference" in lines["brisque"] and "full-reference" in lines["psnr"]
    assert "distribution" in lines["fid"] and "identity" in lines["ism"] and "no-reference" in lines["fdfr"]
