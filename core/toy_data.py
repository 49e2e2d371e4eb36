"""Training data of the ``toy`` model: pictures that install with the dependencies.

Every picture here ships inside a wheel already in the environment (scikit-image's
``skimage.data`` and matplotlib's ``mpl-data/sample_data``), so the toy model can be
retrained offline. The default evaluation set ``samples`` (astronaut, chelsea, coffee,
rocket; see ``core/images.py``) is HELD OUT: the model never sees those pictures, so
an edit or a protection measured on them is not a test of memorisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

#: The held-out split: the default evaluation set ``samples``. Never trained on.
HELD_OUT: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")

#: The training split: name -> caption. Captions use words of the project's tokenizer
#: vocabulary (core/tokenizer.py) where they can.
TRAIN_CAPTIONS: dict[str, str] = {
    "immunohistochemistry": "a photo of stained tissue cells",
    "hubble_deep_field": "a photo of a galaxy with stars in space",
    "retina": "a photo of the retina of an eye",
    "motorcycle_left": "a photo of a motorcycle in a street",
    "motorcycle_right": "a photo of a motorcycle in a street",
    "colorwheel": "a colour wheel",
    "logo": "a logo on white",
    "camera": "a black and white photo of a man with a camera",
    "brick": "a black and white photo of a brick texture",
    "grass": "a black and white photo of a grass texture",
    "gravel": "a black and white photo of a gravel texture",
    "moon": "a black and white photo of the moon",
    "cell": "a black and white photo of cells",
    "coins": "a black and white photo of coins",
    "clock": "a black and white photo of a clock",
    "page": "a black and white photo of a page of text",
    "text": "a black and white photo of text",
    "horse": "a black and white picture of a horse",
    "microaneurysms": "a black and white photo of the retina of an eye",
    "grace_hopper": "a portrait photo of a woman",
    "present": "a picture of a blue present",
}

TRAIN: tuple[str, ...] = tuple(TRAIN_CAPTIONS)


def _to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Any skimage/matplotlib picture -> ``(H, W, 3)`` uint8 (greys repeated, alpha on white)."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:
        # Composite on white: transparent pixels of a logo are background, not black.
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return array


def _matplotlib_sample(filename: str) -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data(filename, asfileobj=True) as handle:  # type: ignore[union-attr]
        return np.asarray(Image.open(handle).convert("RGBA" if filename.endswith(".png") else "RGB"))


def load_picture(name: str) -> np.ndarray:
    """The named picture as ``(H, W, 3)`` uint8, from the installed packages only (no download)."""
    from skimage import data

    if name == "motorcycle_left":
        array = data.stereo_motorcycle()[0]
    elif name == "motorcycle_right":
        array = data.stereo_motorcycle()[1]
    elif name == "grace_hopper":
        array = _matplotlib_sample("grace_hopper.jpg")
    elif name == "present":
        array = _matplotlib_sample("Minduka_Present_Blue_Pack.png")
    else:
        array = getattr(data, name)()
    return _to_rgb_uint8(array)


@dataclass(frozen=True)
class Picture:
    name: str
    caption: str
    pixels: torch.Tensor  # (3, H, W) float32 in [0, 1]


def training_pictures(names: tuple[str, ...] = TRAIN) -> list[Picture]:
    """The training pictures; refuses any held-out name so the split cannot leak."""
    leaked = set(names) & set(HELD_OUT)
    if leaked:
        raise ValueError(f"held-out pictures {sorted(leaked)} must not be trained on")
    pictures = []
    for name in names:
        array = load_picture(name)
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
        pictures.append(Picture(name, TRAIN_CAPTIONS[name], pixels))
    return pictures


def held_out_images(size: int = 128) -> dict[str, torch.Tensor]:
    """The held-out pictures exactly as the bench sees ``samples`` at ``size``² (cloakbench.core.images intake)."""
    from cloakbench.core.images import load_sample

    return {name: load_sample(name, size).pixels for name in HELD_OUT}


class CropSampler:
    """Random square crops at several scales, resized to ``size``, with horizontal flips.

    Each picture is pre-resized to a few sizes (its short side ``size * s`` for the
    ``scales``); a crop is then a slice, which keeps a CPU training step cheap.
    """

    def __init__(
        self,
        pictures: list[Picture],
        size: int,
        scales=(1.0, 1.25, 1.5, 2.0, 3.0),
        generator: torch.Generator | None = None,
    ):
        import torch.nn.functional as F

        self.size = size
        self.generator = generator
        self.pictures = pictures
        self.levels: list[list[torch.Tensor]] = []
        for picture in pictures:
            _, h, w = picture.pixels.shape
            levels = []
            for scale in scales:
                short = max(size, round(size * scale))
                factor = short / min(h, w)
                if factor > 1.0 and scale > 1.0:
                    continue  # no upsampled copies beyond the base level: they only teach blur
                new = (max(size, round(h * factor)), max(size, round(w * factor)))
                levels.append(
                    F.interpolate(
                        picture.pixels[None], size=new, mode="bicubic", antialias=True, align_corners=False
                    ).clamp(0, 1)[0]
                )
            self.levels.append(levels)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator).item())

    def sample(self, batch: int, size: int | None = None) -> tuple[torch.Tensor, list[str]]:
        """``(batch, 3, size, size)`` crops and their captions."""
        size = size or self.size
        crops, captions = [], []
        for _ in range(batch):
            index = self._randint(len(self.pictures))
            levels = self.levels[index]
            level = levels[self._randint(len(levels))]
            _, h, w = level.shape
            top, left = self._randint(h - size + 1), self._randint(w - size + 1)
            crop = level[:, top : top + size, left : left + size]
            if self._randint(2):
                crop = crop.flip(-1)
            crops.append(crop)
            captions.append(self.pictures[index].caption)
        return torch.stack(crops), captions
