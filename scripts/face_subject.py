"""Write a small face subject from scikit-image's astronaut photo: crops around the face, a manifest.

``python scripts/face_subject.py OUT [--count 4]`` writes ``OUT/astronaut-*.png`` (square crops
centred on Eileen Collins' face, some mirrored, at slightly different scales and offsets, as a
subject's photos differ) and ``OUT/manifest.csv`` with ``category = face``, which is what
marks a subject for the face metrics (docs/METRICS.md, "No-reference and face metrics"). The
photo ships with scikit-image, so this needs no network. Use it as
``bench compare --images OUT/manifest.csv --attacks lora ...``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

#: The face's box in the 512² astronaut photo (dlib's CNN detector: left, top, right, bottom).
FACE_BOX = (168, 69, 263, 164)
#: (scale of the crop side relative to the face box, horizontal offset, vertical offset, mirrored)
VARIANTS = ((1.6, 0, 0, False), (1.6, 0, 0, True), (1.9, -8, 6, False), (1.4, 6, -4, True), (1.75, 4, 8, False))
PROMPT = "a photo of sks person"


def crops(count: int) -> list[Image.Image]:
    from skimage import data

    photo = Image.fromarray(np.asarray(data.astronaut()))
    left, top, right, bottom = FACE_BOX
    centre_x, centre_y, side = (left + right) / 2, (top + bottom) / 2, right - left
    found = []
    for scale, dx, dy, mirrored in VARIANTS[:count]:
        half = side * scale / 2
        box = (centre_x + dx - half, centre_y + dy - half, centre_x + dx + half, centre_y + dy + half)
        crop = photo.crop(tuple(round(v) for v in box))
        found.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirrored else crop)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=4, choices=range(1, len(VARIANTS) + 1))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "prompt", "category"])
        for index, crop in enumerate(crops(args.count)):
            name = f"astronaut-{index}.png"
            crop.save(args.out / name)
            writer.writerow([name, PROMPT, "face"])
    print(f"wrote {args.count} face photos and manifest.csv to {args.out}")


if __name__ == "__main__":
    main()
