"""Share of a ±8/255 perturbation left after pdm-pure-uncond alone on toy-pixel (docs/MIMICRY.md, issue 22):
mean over images of ||P(x+δ) − P(x)||₂ / ||δ||₂, same generator seed for both calls (so only δ differs).

Run against a tree: PYTHONPATH=<links folder> OMP_NUM_THREADS=1 python scripts/measure_pdm_pure_share.py
"""

import numpy as np
import torch
from skimage import data

from cloakbench.mimicry import MIMICRY

photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def prep(a):
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255
    return torch.nn.functional.interpolate(t[None], size=(128, 128), mode="bicubic", antialias=True).clamp(0, 1)[0]


x = torch.stack([prep(p) for p in photos])
x = (x * 255).round() / 255
sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(7)).float() * 2 - 1
xp = (x + sign * 8 / 255).clamp(0, 1)
attack = MIMICRY.get("pdm-pure-uncond")()  # toy-pixel, 128²: the photos are at its resolution
print("version", attack.version)
a = attack(x, None, generator=torch.Generator().manual_seed(0))
b = attack(xp, None, generator=torch.Generator().manual_seed(0))
share = (b - a).flatten(1).norm(dim=1) / (xp - x).flatten(1).norm(dim=1)
print("per image", [round(float(s), 4) for s in share], "mean", round(float(share.mean()), 4))
