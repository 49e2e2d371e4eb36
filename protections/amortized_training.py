"""Training an amortized protector: fit the perturbation generator to a PGD protection's objective.

What is learnt (the objective). Each step takes a batch of training crops ``x``, makes
``x_adv = clip_[0,1](x + (eps/255)·G(x))`` (``protections/perturbation_generator.py``), and asks
the chosen protection's own :meth:`~cloakbench.protections.engine.PGDProtection.direction` for
the vector ``d`` whose sign would move ``x_adv`` one PGD step (its objective, its draws of
``t``, ``ε`` and posterior samples, through the engine's ``prepare``/``draw``: no loss is
rewritten here). The generator's weights ``θ`` then follow the chain rule with ``d`` as the
upstream gradient of the pixels:

    ∇_θ J = (∂x_adv/∂θ)ᵀ · d / mean|d|      (per image; Adam ascends J)

This is the score-distillation trick (Poole et al., DreamFusion, arXiv:2209.14988) that RID
trains its generator with (Guo et al., arXiv:2412.09844, "Adv-SDS"; their
``train_sd_ensemble_reg.py``, ``SpecifyGradient``: a gradient injected at the generator's
output), here for any PGD protection: for SDS(−) ``d = −J_Eᵀ(ε̂ − ε)`` is not the gradient of any
scalar loss (the UNet's Jacobian is dropped), which is exactly why the direction, not a loss,
is what is back-propagated. For the encoder attack ``d = ∇‖z − z_clean‖²`` is a true gradient.
Dividing by ``mean|d|`` per image makes each image and timestep weigh alike (the PGD step it
replaces uses ``sign(d)``, which is scale-free too).

Set-up, with its sources and the deliberate differences (docs/PROTECTIONS.md, "Amortized"):

- data: random square crops of the model's working size with flips (``core/toy_data.py``'s
  ``CropSampler``); the toy protector trains on ``core/toy_data.TRAIN`` only (the four
  held-out evaluation pictures are refused there). FastProtect (Ahn et al., CVPR 2025,
  arXiv:2412.11423) and RID pre-train on large image sets; we have ~20 pictures and a CPU.
- optimiser: Adam, learning rate 1e-3 (project choice: RID uses AdamW 1e-4, weight decay 1e-2,
  batch 3 over many GPU epochs; a CPU budget of tens of minutes needs the larger step).
- no perceptual or ℓ∞ penalty term (DiffVax's second loss term, RID's regulariser): the budget
  holds by construction (``tanh``), and every protection here is judged at the same budget.
- FastProtect's mixture of perturbations, multi-layer VAE loss and adaptive inference are not
  adopted (one image-conditioned generator already adapts to the input).

Seeded and resumable: every draw comes from two generators (crops; the protection's per-image
randomness) whose states, the weights and Adam's moments are saved in ``OUT/checkpoint/``
every ``checkpoint_every`` steps (safetensors and JSON, no pickle); rerunning continues from
there and gives the weights an uninterrupted run gives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cloakbench.core.io import write_atomic
from cloakbench.core.toy_data import CropSampler, Picture
from cloakbench.protections.base import PROTECTIONS
from cloakbench.protections.engine import PGDProtection
from cloakbench.protections.perturbation_generator import (
    GeneratorSpec,
    PerturbationGenerator,
    save_generator,
    seeded_generator,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
LOG_FILE = "train_log.json"


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What determines a training run (recorded in ``protector.json`` and the card)."""

    objective: str = "sds-"
    eps: float = 16.0
    steps: int = 2000
    batch: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    widths: tuple[int, ...] = (16, 32, 64)
    checkpoint_every: int = 50


def objective_protection(name: str, eps: float) -> PGDProtection:
    """The protection whose ``direction`` is the training signal, at the protector's budget."""
    cls = PROTECTIONS.get(name)
    if not issubclass(cls, PGDProtection):
        raise ValueError(f"--objective {name} is not a PGD protection (it has no direction to learn from)")
    if getattr(cls, "analysis_only", False):
        raise ValueError(f"--objective {name} is analysis-only (no pixel budget); choose sds-, encoder, …")
    return cls(dataclasses.replace(cls.Config(), eps=eps, steps=1))


def generator_gradient(
    objective: PGDProtection, model, clean: torch.Tensor, adversarial: torch.Tensor, draws_from: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d / mean|d| per image, the objective's (N,) loss)`` at ``adversarial``: the pixels' upstream gradient."""
    state = objective.prepare(clean, model, generator=draws_from)
    leaf = adversarial.detach().requires_grad_(True)
    direction, loss = objective.direction(state, leaf, objective.draw(state))
    direction = direction.detach().float()
    scale = direction.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return direction / scale, loss.detach().float()


def _save_checkpoint(folder: Path, generator, optimizer, step: int, streams: dict, history: list) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"generator.{k}": v.detach().contiguous() for k, v in generator.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"adam.{index}.{key}"] = torch.as_tensor(value).detach().contiguous()
    for name, stream in streams.items():
        tensors[f"stream.{name}"] = stream.get_state()
    temporary = folder / "state.safetensors.tmp"
    save_file(tensors, str(temporary))
    temporary.replace(folder / "state.safetensors")
    write_atomic(folder / "progress.json", json.dumps({"step": step, "history": history}).encode())


def _load_checkpoint(folder: Path, generator, optimizer, streams: dict) -> tuple[int, list]:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "state.safetensors"))
    generator.load_state_dict({k[len("generator.") :]: v for k, v in tensors.items() if k.startswith("generator.")})
    state = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("adam."):
            _, index, field = key.split(".", 2)
            state["state"].setdefault(int(index), {})[field] = value
    optimizer.load_state_dict(state)
    for name, stream in streams.items():
        stream.set_state(tensors[f"stream.{name}"])
    progress = json.loads((folder / "progress.json").read_text())
    return int(progress["step"]), list(progress["history"])


def train_protector(
    model,
    pictures: list[Picture],
    out: Path,
    settings: TrainingSettings,
    *,
    minutes: float | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    facts: dict | None = None,
) -> dict:
    """Train (or resume) a protector into ``out``; returns the record written to ``protector.json``.

    ``minutes``: stop after this much wall-clock time (checkpointed; rerun to continue).
    ``on_step(step, steps, loss)`` after each step (the CLI's progress bar).
    """
    objective = objective_protection(settings.objective, settings.eps)
    size = int(model.resolution)
    crops = torch.Generator().manual_seed(settings.seed)
    draws = torch.Generator().manual_seed(settings.seed + 1)
    sampler = CropSampler(pictures, size, generator=crops)
    generator: PerturbationGenerator = seeded_generator(GeneratorSpec(tuple(settings.widths)), settings.seed)
    generator = generator.to(model.device).train()
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings.learning_rate)
    checkpoint = out / CHECKPOINT
    step, history = 0, list[dict]()
    if (checkpoint / "state.safetensors").is_file():
        step, history = _load_checkpoint(checkpoint, generator, optimizer, {"crops": crops, "draws": draws})
        log.info("resuming %s at step %d", out, step)
    started = time.perf_counter()
    eps = settings.eps / 255.0
    window: list[float] = []
    while step < settings.steps:
        clean, _ = sampler.sample(settings.batch)
        clean = clean.to(model.device)
        adversarial = (clean + eps * generator(clean)).clamp(0.0, 1.0)
        # One 62-bit draw per image from the run's stream: the objective's per-image generators.
        image_streams = [
            torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=draws).item()))
            for _ in range(settings.batch)
        ]
        gradient, loss = generator_gradient(objective, model, clean, adversarial, image_streams)
        optimizer.zero_grad(set_to_none=True)
        # Ascend: Adam descends, so the pixels receive −d (the chain rule through G does the rest).
        adversarial.backward(-gradient / settings.batch)
        optimizer.step()
        step += 1
        window.append(float(loss.mean()))
        if on_step is not None:
            on_step(step, settings.steps, window[-1])
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            history.append({"step": step, "objective_loss": sum(window) / len(window)})
            window = []
            _save_checkpoint(checkpoint, generator, optimizer, step, {"crops": crops, "draws": draws}, history)
        if minutes is not None and time.perf_counter() - started > minutes * 60.0 and step < settings.steps:
            if window:
                history.append({"step": step, "objective_loss": sum(window) / len(window)})
            _save_checkpoint(checkpoint, generator, optimizer, step, {"crops": crops, "draws": draws}, history)
            break
    record = {
        "objective": settings.objective,
        "eps": settings.eps,
        "trained_steps": step,
        "settings": {**dataclasses.asdict(settings), "widths": list(settings.widths)},
        "model": {"name": model.name, "weights_hash": model.weights_hash},
        **(facts or {}),
    }
    save_generator(generator.eval(), out, record)
    write_atomic(out / LOG_FILE, (json.dumps(history, indent=1) + "\n").encode())
    return record
