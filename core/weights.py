"""Where pretrained weights for metrics and purifications live, and building models from them offline.

Every pretrained network the benchmark uses outside the diffusion model itself (LPIPS's
AlexNet/VGG backbones, the FID/KID Inception, CLIP) is looked up where its own library
looks — the torch hub cache (``torch.hub.get_dir()/checkpoints``, i.e. under
``TORCH_HOME``) or the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``) — or at a path
the user configures. Nothing here downloads: a missing file raises :class:`WeightsMissing`
naming the exact file, the folder it must go in, and how to get it. A benchmark must never
fall back to random weights silently (docs/METRICS.md, "Weights").

Pickled torch checkpoints are read with ``torch.load(weights_only=True)`` only
(docs/RELIABILITY.md, "Weights in"); CLIP is read from safetensors only.

Typical use::

    path = require(ALEXNET)             # Path, or WeightsMissing with the fix
    net = build_lpips("alex", device)   # lpips.LPIPS with the found backbone, no download
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TORCH_HUB = "torch-hub"
HF_CACHE = "hf-cache"
LPIPS_PACKAGE = "lpips-package"
#: A file shipped inside an installed Python package (``WeightSpec.package``: ``module/sub/folder``).
PACKAGE = "package"
#: deepface's weights folder, ``$DEEPFACE_HOME/.deepface/weights`` (``~`` without the variable).
DEEPFACE_HOME = "deepface-home"
#: pyiqa's cache, ``torch.hub.get_dir()/pyiqa`` (its ``DEFAULT_CACHE_DIR``).
PYIQA_CACHE = "pyiqa-cache"


class WeightsMissing(FileNotFoundError):
    """A pretrained file is not where it must be; the message says which file, where, and how to get it."""


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One pretrained file (or Hugging Face folder) a metric or purification needs.

    ``folder`` names the place its library looks: :data:`TORCH_HUB` (``torch.hub.get_dir()
    / "checkpoints"``), :data:`HF_CACHE` (the snapshot of ``repo_id`` in the Hugging Face hub
    cache) or :data:`LPIPS_PACKAGE` (files shipped inside the ``lpips`` wheel). ``env_var``,
    when set in the environment, overrides the place with a path to the file (or folder).
    For Hugging Face folders ``filename`` is the weights file and ``required_files`` lists
    every file the folder must contain.
    """

    name: str
    filename: str
    folder: str
    how_to_get: str
    env_var: str | None = None
    repo_id: str | None = None
    required_files: tuple[str, ...] = ()
    used_by: tuple[str, ...] = ()
    package: str = ""  # for PACKAGE: the folder inside the installed package, e.g. "brisque/models"

    @property
    def is_folder(self) -> bool:
        return self.folder == HF_CACHE


ALEXNET = WeightSpec(
    name="alexnet",
    filename="alexnet-owt-7be5be79.pth",
    folder=TORCH_HUB,
    env_var="CLOAKBENCH_ALEXNET",
    how_to_get=(
        "download https://download.pytorch.org/models/alexnet-owt-7be5be79.pth on a machine with "
        "network (or run torchvision.models.alexnet(weights='IMAGENET1K_V1') there) and copy the file"
    ),
    used_by=("lpips",),
)
VGG16 = WeightSpec(
    name="vgg16",
    filename="vgg16-397923af.pth",
    folder=TORCH_HUB,
    env_var="CLOAKBENCH_VGG16",
    how_to_get=(
        "download https://download.pytorch.org/models/vgg16-397923af.pth on a machine with network "
        "(or run torchvision.models.vgg16(weights='IMAGENET1K_V1') there) and copy the file"
    ),
    used_by=("lpips (net=vgg)",),
)
INCEPTION = WeightSpec(
    name="inception-fid",
    filename="weights-inception-2015-12-05-6726825d.pth",
    folder=TORCH_HUB,
    env_var="CLOAKBENCH_INCEPTION",
    how_to_get=(
        "download https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth on a machine with network and copy the file"
    ),
    used_by=("fid", "kid"),
)
CLIP = WeightSpec(
    name="clip",
    filename="model.safetensors",
    folder=HF_CACHE,
    env_var="CLOAKBENCH_CLIP",
    repo_id="openai/clip-vit-base-patch32",
    required_files=("config.json", "model.safetensors", "preprocessor_config.json"),
    how_to_get=(
        "on a machine with network run `huggingface-cli download openai/clip-vit-base-patch32 "
        "config.json model.safetensors preprocessor_config.json` and copy its Hugging Face cache "
        "(HF_HOME), or set CLOAKBENCH_CLIP to a folder holding those three files"
    ),
    used_by=("clip-sim",),
)


def _lpips_heads(net: str) -> WeightSpec:
    return WeightSpec(
        name=f"lpips-heads-{net}",
        filename=f"{net}.pth",
        folder=LPIPS_PACKAGE,
        how_to_get="reinstall the lpips package (pip install lpips==0.1.4): its wheel ships these files",
        used_by=("lpips",) if net == "alex" else ("lpips (net=vgg)",),
    )


LPIPS_HEADS_ALEX = _lpips_heads("alex")
LPIPS_HEADS_VGG = _lpips_heads("vgg")

#: The Stable Diffusion x4 upscaler (Rombach et al., arXiv:2112.10752), used by ``upscale`` as
#: Hönig et al. ran it (arXiv:2406.12027). A diffusers folder, read with safetensors only.
SD_X4_UPSCALER = WeightSpec(
    name="sd-x4-upscaler",
    filename="unet/diffusion_pytorch_model.safetensors",
    folder=HF_CACHE,
    env_var="CLOAKBENCH_SD_X4_UPSCALER",
    repo_id="stabilityai/stable-diffusion-x4-upscaler",
    required_files=(
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
        "low_res_scheduler/scheduler_config.json",
    ),
    how_to_get=(
        "on a machine with network run `huggingface-cli download stabilityai/stable-diffusion-x4-upscaler "
        "--include '*.json' '*.txt' '*.safetensors'` and copy its Hugging Face cache (HF_HOME), or set "
        "CLOAKBENCH_SD_X4_UPSCALER (or upscale.upscaler_path) to a folder holding those files"
    ),
    used_by=("upscale",),
)
#: DeepFloyd IF stage II (64² -> 256² pixel diffusion, T5-conditioned), the purifier of PDM-Pure
#: (Xue et al., "Pixel is a Barrier", arXiv:2404.13320). A diffusers folder, safetensors only.
IF_STAGE_II = WeightSpec(
    name="deepfloyd-if-ii",
    filename="unet/diffusion_pytorch_model.safetensors",
    folder=HF_CACHE,
    env_var="CLOAKBENCH_IF_STAGE_II",
    repo_id="DeepFloyd/IF-II-L-v1.0",
    required_files=(
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "image_noising_scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "tokenizer/spiece.model",
    ),
    how_to_get=(
        "accept the DeepFloyd IF licence on huggingface.co, then on a machine with network run "
        "`huggingface-cli download DeepFloyd/IF-II-L-v1.0 --include '*.json' '*.model' '*.safetensors'` and "
        "copy its Hugging Face cache (HF_HOME), or set CLOAKBENCH_IF_STAGE_II to a folder holding those files"
    ),
    used_by=("pdm-pure",),
)


def _package_file(name: str, filename: str, package: str, install: str, used_by: tuple[str, ...]) -> WeightSpec:
    return WeightSpec(
        name=name,
        filename=filename,
        folder=PACKAGE,
        package=package,
        how_to_get=f"install the metrics extra: pip install -e '.[metrics]' ({install} ships this file)",
        used_by=used_by,
    )


#: The learned no-reference and face metrics whose weights ship inside registry packages
#: (docs/METRICS.md, "No-reference and face metrics").
BRISQUE_SVM = _package_file("brisque-svm", "svm.txt", "brisque/models", "brisque==0.2.0", ("brisque",))
DLIB_FACE_DETECTOR = _package_file(
    "dlib-mmod-face-detector",
    "mmod_human_face_detector.dat",
    "face_recognition_models/models",
    "face-recognition-models==0.3.0",
    ("fdfr", "ism (backend=dlib, detector=cnn)"),
)
DLIB_FACE_LANDMARKS = _package_file(
    "dlib-5-point-landmarks",
    "shape_predictor_5_face_landmarks.dat",
    "face_recognition_models/models",
    "face-recognition-models==0.3.0",
    ("fdfr", "ism (backend=dlib)"),
)
DLIB_FACE_EMBEDDING = _package_file(
    "dlib-resnet-face-embedding",
    "dlib_face_recognition_resnet_model_v1.dat",
    "face_recognition_models/models",
    "face-recognition-models==0.3.0",
    ("fdfr", "ism (backend=dlib)"),
)
_DEEPFACE_HOW = (
    "pip install deepface retina-face (TensorFlow), and on a machine with network download "
    "{0} from deepface's model release v1.0 (github.com/serengil/deepface_models) and copy it here, "
    "as Anti-DreamBooth's evaluations/readme.md says"
)
RETINAFACE = WeightSpec(
    name="retinaface",
    filename="retinaface.h5",
    folder=DEEPFACE_HOME,
    how_to_get=_DEEPFACE_HOW.format("retinaface.h5"),
    used_by=("fdfr, ism (backend=arcface)",),
)
ARCFACE = WeightSpec(
    name="arcface",
    filename="arcface_weights.h5",
    folder=DEEPFACE_HOME,
    how_to_get=_DEEPFACE_HOW.format("arcface_weights.h5"),
    used_by=("fdfr, ism (backend=arcface)",),
)
CLIP_IQA_RN50 = WeightSpec(
    name="clip-iqa-rn50",
    filename="RN50.pt",
    folder=PYIQA_CACHE,
    how_to_get=(
        "pip install pyiqa, then on a machine with network run `pyiqa.create_metric('clipiqa')` once and copy "
        "the files it caches (OpenAI's CLIP RN50.pt) into this folder"
    ),
    used_by=("clip-iqa",),
)
LIQE_CHECKPOINT = WeightSpec(
    name="liqe",
    filename="LIQE.pt",
    folder=PYIQA_CACHE,
    how_to_get=(
        "pip install pyiqa, then on a machine with network run `pyiqa.create_metric('liqe')` once and copy "
        "the files it caches (LIQE.pt and OpenAI's CLIP ViT-B-32.pt) into this folder"
    ),
    used_by=("liqe",),
)
LIQE_CLIP = WeightSpec(
    name="liqe-clip-vit-b32",
    filename="ViT-B-32.pt",
    folder=PYIQA_CACHE,
    how_to_get=LIQE_CHECKPOINT.how_to_get,
    used_by=("liqe",),
)

ALL_SPECS: tuple[WeightSpec, ...] = (
    ALEXNET,
    LPIPS_HEADS_ALEX,
    VGG16,
    LPIPS_HEADS_VGG,
    INCEPTION,
    CLIP,
    SD_X4_UPSCALER,
    IF_STAGE_II,
    BRISQUE_SVM,
    DLIB_FACE_DETECTOR,
    DLIB_FACE_LANDMARKS,
    DLIB_FACE_EMBEDDING,
    RETINAFACE,
    ARCFACE,
    CLIP_IQA_RN50,
    LIQE_CHECKPOINT,
    LIQE_CLIP,
)


# -- where libraries look ----------------------------------------------------------------
def torch_hub_checkpoints() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where torchvision and torch-fidelity cache downloads."""
    import torch.hub  # lazy: `bench models` should not pay for torch when avoidable

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time).

    Same order as huggingface_hub: ``HF_HUB_CACHE``, then ``HF_HOME/hub``, then
    ``XDG_CACHE_HOME/huggingface/hub``, then ``~/.cache/huggingface/hub``.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def lpips_package_weights() -> Path:
    import importlib.util

    found = importlib.util.find_spec("lpips")
    if found is None or not found.submodule_search_locations:
        return Path("<lpips package not installed>")
    return Path(next(iter(found.submodule_search_locations))) / "weights" / "v0.1"


def package_folder(package: str) -> Path:
    """``package`` (``module/sub/folder``) inside the installed module, found without importing it."""
    import importlib.util

    module, _, sub = package.partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return Path(f"<{module} package not installed>") / sub
    return Path(next(iter(found.submodule_search_locations))) / sub


def deepface_weights() -> Path:
    """deepface's weights folder: ``$DEEPFACE_HOME/.deepface/weights`` (``~`` without the variable)."""
    root = os.environ.get("DEEPFACE_HOME") or str(Path.home())
    return Path(root).expanduser() / ".deepface" / "weights"


def pyiqa_cache() -> Path:
    """pyiqa's ``DEFAULT_CACHE_DIR``: ``torch.hub.get_dir()/pyiqa``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "pyiqa"


def _repo_folder(repo_id: str) -> Path:
    return hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))


def place(spec: WeightSpec) -> Path:
    """Where ``spec`` is looked for now: the configured path if its env var is set, else its library's place."""
    if spec.env_var and os.environ.get(spec.env_var):
        return Path(os.environ[spec.env_var]).expanduser()
    if spec.folder == TORCH_HUB:
        return torch_hub_checkpoints() / spec.filename
    if spec.folder == LPIPS_PACKAGE:
        return lpips_package_weights() / spec.filename
    if spec.folder == PACKAGE:
        return package_folder(spec.package) / spec.filename
    if spec.folder == DEEPFACE_HOME:
        return deepface_weights() / spec.filename
    if spec.folder == PYIQA_CACHE:
        return pyiqa_cache() / spec.filename
    if spec.folder == HF_CACHE:
        assert spec.repo_id is not None
        return _repo_folder(spec.repo_id) / "snapshots"
    raise ValueError(f"unknown weights folder kind {spec.folder!r}")


def _complete(folder: Path, spec: WeightSpec) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in spec.required_files)


def _hf_snapshot(spec: WeightSpec) -> Path | None:
    """The snapshot that ``refs/main`` points at if complete, else the first complete one (sorted)."""
    assert spec.repo_id is not None
    repo = _repo_folder(spec.repo_id)
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidate = repo / "snapshots" / ref.read_text().strip()
        if _complete(candidate, spec):
            return candidate
    snapshots = repo / "snapshots"
    if snapshots.is_dir():
        for candidate in sorted(p for p in snapshots.iterdir() if p.is_dir()):
            if _complete(candidate, spec):
                return candidate
    return None


def find(spec: WeightSpec, path: str | os.PathLike | None = None) -> Path | None:
    """The file (or, for Hugging Face specs, the folder) for ``spec`` if present, else ``None``.

    ``path`` (from a metric's config) wins over the env var, which wins over the library's place.
    A configured path may be the file itself or a folder holding ``spec.filename``.
    """
    configured = Path(path).expanduser() if path else None
    if configured is None and spec.env_var and os.environ.get(spec.env_var):
        configured = Path(os.environ[spec.env_var]).expanduser()
    if configured is not None:
        if spec.is_folder:
            return configured if _complete(configured, spec) else None
        if configured.is_dir():
            configured = configured / spec.filename
        return configured if configured.is_file() else None
    if spec.is_folder:
        return _hf_snapshot(spec)
    candidate = place(spec)
    return candidate if candidate.is_file() else None


def describe_place(spec: WeightSpec, path: str | os.PathLike | None = None) -> str:
    """Human text: the exact file (or folder contents) expected and where."""
    if path:
        where = Path(path).expanduser()
    elif spec.env_var and os.environ.get(spec.env_var):
        where = Path(os.environ[spec.env_var]).expanduser()
    else:
        where = None
    if spec.is_folder:
        files = ", ".join(spec.required_files)
        if where is not None:
            return f"{files} in {where}"
        return f"{files} in the Hugging Face cache snapshot of {spec.repo_id} ({place(spec)}/<revision>/)"
    if where is not None:
        return str(where / spec.filename if where.is_dir() else where)
    return str(place(spec))


def missing_message(spec: WeightSpec, path: str | os.PathLike | None = None) -> str:
    override = f" (or set {spec.env_var} to its path)" if spec.env_var else ""
    return (
        f"{spec.name} weights not found: expected {describe_place(spec, path)}{override}. "
        f"This machine cannot download them; {spec.how_to_get}."
    )


def require(spec: WeightSpec, path: str | os.PathLike | None = None) -> Path:
    """Like :func:`find` but raises :class:`WeightsMissing` naming the exact file, the place and the fix."""
    found = find(spec, path)
    if found is None:
        raise WeightsMissing(missing_message(spec, path))
    return found


@dataclasses.dataclass(frozen=True)
class WeightStatus:
    spec: WeightSpec
    path: Path | None
    expected: str

    @property
    def ready(self) -> bool:
        return self.path is not None


def status(specs: tuple[WeightSpec, ...] = ALL_SPECS) -> list[WeightStatus]:
    """Ready/missing for each spec, for ``bench models``."""
    return [WeightStatus(spec, find(spec), describe_place(spec)) for spec in specs]


# -- builders (never download) -------------------------------------------------------------
def load_state_dict(file: Path) -> dict[str, Any]:
    """A tensor-only state dict from a torch checkpoint; anything else is refused by torch."""
    import torch

    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{file} does not hold a state dict (got {type(state).__name__})")
    return state


LPIPS_BACKBONES = {"alex": (ALEXNET, LPIPS_HEADS_ALEX, "alexnet"), "vgg": (VGG16, LPIPS_HEADS_VGG, "vgg16")}


def build_lpips(net: str = "alex", device: Any = "cpu", path: str | os.PathLike | None = None):
    """``lpips.LPIPS`` (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a
    Perceptual Metric", arXiv:1801.03924) with the backbone read from the found file.

    lpips would ask torchvision to download the ImageNet backbone; instead it is built with
    ``pnet_rand=True`` (no download) and the backbone's ``features`` are then loaded from the
    torchvision checkpoint found by :func:`require`. The linear heads ship inside lpips.
    """
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"lpips net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    backbone_spec, heads_spec, tv_name = LPIPS_BACKBONES[net]
    backbone_file = require(backbone_spec, path)
    require(heads_spec)

    import lpips

    state = load_state_dict(backbone_file)
    # LPIPS uses only torchvision's convolutional `features` (the classifier is not needed).
    features = {key[len("features.") :]: value for key, value in state.items() if key.startswith("features.")}
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=False`; harmless, and not the user's to fix.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    # lpips slices `features` into children named by their index there: load each layer strictly.
    used: set[str] = set()
    try:
        for slice_module in model.net.children():
            for index, layer in slice_module.named_children():
                own = {name: features[f"{index}.{name}"] for name in layer.state_dict()}
                layer.load_state_dict(own)
                used.update(f"{index}.{name}" for name in own)
    except KeyError as error:
        raise RuntimeError(
            f"{backbone_file} is not a torchvision {tv_name} checkpoint: missing features.{error.args[0]}"
        ) from None
    except RuntimeError as error:
        raise RuntimeError(f"{backbone_file} is not a torchvision {tv_name} checkpoint: {error}") from error
    if used != set(features):
        raise RuntimeError(
            f"{backbone_file} is not a torchvision {tv_name} checkpoint: unexpected "
            f"features {sorted(set(features) - used)[:4]}"
        )
    logger.info("lpips %s backbone loaded from %s", net, backbone_file)
    return model.to(device).eval().requires_grad_(False)


INCEPTION_FEATURES = 2048


def build_inception(device: Any = "cpu", path: str | os.PathLike | None = None, features: int = INCEPTION_FEATURES):
    """torchmetrics' FID Inception (torch-fidelity's port of the TF 2015-12-05 graph) from the found file.

    torch-fidelity reads a weights *path* with ``torch.load(weights_only=False)``. We never
    unpickle user files that way: the file is read with ``weights_only=True`` and the
    verified tensor dict is re-serialised into memory, which is what torch-fidelity then reads.
    The module gets ``num_features`` so torchmetrics' FID/KID accept it as ``feature=``.
    """
    weights_file = require(INCEPTION, path)
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("FID/KID need torch-fidelity: pip install torch-fidelity") from error
    import torch

    buffer = io.BytesIO()
    torch.save(load_state_dict(weights_file), buffer)
    buffer.seek(0)
    try:
        module = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(features)], feature_extractor_weights_path=buffer
        )
    except ModuleNotFoundError as error:
        raise ImportError("FID/KID need torch-fidelity: pip install torch-fidelity") from error
    module.num_features = features
    return module.to(device)


def build_clip(device: Any = "cpu", path: str | os.PathLike | None = None):
    """``(CLIPModel, CLIPImageProcessor)`` from a local folder / HF cache, safetensors only, offline."""
    folder = require(CLIP, path)
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return model.to(device).eval().requires_grad_(False), processor
