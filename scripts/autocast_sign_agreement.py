"""First-step gradient sign agreement of bf16 autocast against float32, on the CPU.

usage: python scripts/autocast_sign_agreement.py MODEL SIZE METHOD... (4 images, seed 0, one thread)
The same state and draws; the direction computed once in float32 and once under
``torch.autocast("cpu", torch.bfloat16)``; prints the share of pixels whose sign agrees
(issue 25 asks >= 99 %; pixels where float32's direction is exactly 0 count as agreeing only
if bf16's is 0 too).
"""

import copy
import sys

import torch

from cloakbench.core.images import quantize_8bit
from cloakbench.core.zoo import load_model
from cloakbench.protections import PROTECTIONS

torch.set_num_threads(1)
model = load_model(sys.argv[1], device="cpu", dtype="float32", seed=0)
size = int(sys.argv[2])
images = quantize_8bit(torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(1)))
for name in sys.argv[3:]:
    protection = PROTECTIONS.get(name).from_overrides({"steps": "1"})
    state = protection.prepare(images, model, generator=torch.Generator().manual_seed(0))
    draws = protection.draw(state)
    directions = []
    for autocast in (False, True):
        adversarial = state.adversarial.detach().clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            direction, _ = protection.direction(copy.copy(state), adversarial, draws)
        directions.append(direction.detach().float())
    agree = (directions[0].sign() == directions[1].sign()).float().mean().item()
    print(
        f"{name}: bf16 autocast sign agreement with float32 {agree:.4%} ({sys.argv[1]}, {size}², 4 images)", flush=True
    )
