"""Write the category dataset of ``configs/paper_table.toml``: DIR/<category>/<name>.png and DIR/prompts.toml.

The pictures are the held-out evaluation photos that ship with scikit-image (the toy model
never trains on them, see core/toy_data.py), one per category, with one prompt per
category as the reference code of Xue et al. ("Toward effective protection against
diffusion-based mimicry through score distillation", arXiv:2311.12832) picks one per
category. Their categories (anime, artwork, landscape, portrait) have no pictures that
install offline; these four stand in for them, and the README says so.

Usage: python configs/paper_table_data.py runs/paper-table-data
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image
from skimage import data

#: category -> (scikit-image picture, the category's prompt)
CATEGORIES = {
    "portrait": ("astronaut", "a photo of a person"),
    "animal": ("chelsea", "a photo of a cat"),
    "still-life": ("coffee", "a photo of a cup of coffee"),
    "landscape": ("rocket", "a photo of a rocket in a landscape"),
}


def main(out: Path) -> None:
    for category, (name, _) in CATEGORIES.items():
        (out / category).mkdir(parents=True, exist_ok=True)
        path = out / category / f"{name}.png"
        if not path.exists():
            Image.fromarray(getattr(data, name)()).convert("RGB").save(path)
    lines = ["# One prompt per category (configs/paper_table_data.py).", "[prompts]"]
    lines += [f'{category} = "{prompt}"' for category, (_, prompt) in CATEGORIES.items()]
    (out / "prompts.toml").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(CATEGORIES)} categories to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/paper-table-data"))
