"""Does an optimisation flag change what a protection computes? Strength checks on a small model.

docs/PERFORMANCE.md: each option of :mod:`cloakbench.bench.perf.optimisations` "earns its place by a measured
ratio in ``bench perf``, and protection strength must not drop with it". This module
compares a protection run on the plain model with the same run (same seed, same
images, same draws) on the optimised model, at three depths:

1. the **first step's direction** (before any sign flip can compound): sign agreement
   and cosine similarity of the PGD direction — exact-math options (channels-last,
   attention kernel, checkpointing) must agree to floating-point tolerance;
2. the **loss trace** over ``steps`` PGD steps (``L_S`` for the semantic methods);
3. the **effect on a mimic**: SDEdit (Meng et al., arXiv 2108.01073) by the *plain*
   model on the clean and on each protected image, same seed; the strength is the mean
   absolute difference between the edit of the protected and of the clean image. For
   scale, the same protection with another seed gives the natural spread.

Run: ``python -m cloakbench.bench.perf.strength --opt channels-last,classic-attn,bf16,vae-ckpt --json FILE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Options that do not change the maths; their first-step directions must agree to fp error.
EXACT_FLAGS = ("channels-last", "sdpa", "classic-attn", "vae-ckpt", "unet-ckpt", "compile")
#: The least share of first-step signs an exact option must keep (sign(0±ulp) may flip).
EXACT_SIGN_AGREEMENT = 0.99


def first_step_direction(method: str, model, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The PGD direction and loss of the first step (the engine's own prepare/draw/direction)."""
    from cloakbench.protections import PROTECTIONS

    protection = PROTECTIONS.get(method)()
    state = protection.prepare(images, model, generator=torch.Generator().manual_seed(seed))
    draws = protection.draw(state)
    adversarial = state.adversarial.detach().requires_grad_(True)
    direction, loss = protection.direction(state, adversarial, draws)
    return direction.detach().float(), loss.detach().float()


def direction_agreement(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Sign agreement, cosine similarity and max relative difference of two directions."""
    a, b = reference.flatten().double(), other.flatten().double()
    return {
        "sign_agreement": float((torch.sign(a) == torch.sign(b)).double().mean()),
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
        "max_relative_difference": float((a - b).abs().max() / a.abs().max().clamp_min(1e-30)),
    }


def protect(method: str, model, images: torch.Tensor, seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(protected 8-bit images, loss trace (steps, N))``."""
    from cloakbench.protections import PROTECTIONS

    protection = PROTECTIONS.get(method).from_overrides({"steps": steps})
    return protection.run(images, model, generator=torch.Generator().manual_seed(seed))


def sdedit(model, images: torch.Tensor, *, seed: int, strength: float, steps: int, prompt: str) -> torch.Tensor:
    from cloakbench.mimicry.base import MIMICRY, AttackContext

    attack = MIMICRY.get("sdedit").from_overrides({"strengths": str(strength), "steps": steps})
    return attack(
        images,
        model,
        generator=torch.Generator().manual_seed(seed),
        context=AttackContext(setting=f"{strength:g}", prompt=prompt),
    )


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def strength_report(
    flags: str,
    *,
    method: str = "sds-",
    arch: str = "tiny-random",
    steps: int = 20,
    seed: int = 0,
    sdedit_strength: float = 0.5,
    sdedit_steps: int = 20,
    prompt: str = "a photo",
    images: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Compare ``method`` on the plain and on the ``flags``-optimised model; see the module docstring."""
    from cloakbench.bench.perf.optimisations import apply_optimisations, parse_optimisations
    from cloakbench.core.images import load_images
    from cloakbench.core.zoo import load_model

    options = parse_optimisations(flags)
    plain = load_model(arch, seed=seed)
    optimised = load_model(arch, seed=seed)
    apply_optimisations(optimised, options)
    if images is None:
        loaded = load_images(["samples"], size=plain.resolution)
        images = torch.stack([image.pixels for image in loaded.images])
    images = images.to(plain.device)

    direction_plain, _ = first_step_direction(method, plain, images, seed)
    direction_optimised, _ = first_step_direction(method, optimised, images, seed)
    agreement = direction_agreement(direction_plain, direction_optimised)

    protected_plain, trace_plain = protect(method, plain, images, seed, steps)
    protected_optimised, trace_optimised = protect(method, optimised, images, seed, steps)
    protected_other_seed, trace_other_seed = protect(method, plain, images, seed + 1, steps)

    edit = {
        name: sdedit(plain, pictures, seed=seed, strength=sdedit_strength, steps=sdedit_steps, prompt=prompt)
        for name, pictures in (
            ("clean", images),
            ("plain", protected_plain),
            ("optimised", protected_optimised),
            ("other_seed", protected_other_seed),
        )
    }
    effect_plain = mean_abs(edit["plain"], edit["clean"])
    effect_optimised = mean_abs(edit["optimised"], edit["clean"])
    effect_other_seed = mean_abs(edit["other_seed"], edit["clean"])
    trace_scale = float(trace_plain.abs().mean().clamp_min(1e-12))
    report = {
        "flags": options.label,
        "method": method,
        "arch": arch,
        "steps": steps,
        "seed": seed,
        "images": int(images.shape[0]),
        "resolution": int(images.shape[-1]),
        "first_step": agreement,
        "trace_max_relative_difference": float((trace_plain - trace_optimised).abs().max()) / trace_scale,
        "trace_mean_plain": float(trace_plain.mean()),
        "trace_mean_optimised": float(trace_optimised.mean()),
        "trace_mean_other_seed": float(trace_other_seed.mean()),
        "protected_pixels_changed": float((protected_plain != protected_optimised).float().mean()),
        "protected_max_difference_8bit": float((protected_plain - protected_optimised).abs().max() * 255),
        "sdedit": {
            "strength": sdedit_strength,
            "steps": sdedit_steps,
            "effect_plain": effect_plain,
            "effect_optimised": effect_optimised,
            "effect_other_seed": effect_other_seed,
            "plain_vs_optimised": mean_abs(edit["optimised"], edit["plain"]),
            "plain_vs_other_seed": mean_abs(edit["other_seed"], edit["plain"]),
        },
    }
    report["verdict"] = verdict(options.label, report)
    return report


def verdict(label: str, report: dict[str, Any]) -> dict[str, Any]:
    """Whether strength holds, by an explicit rule written into the result.

    Exact-math options: the first step's signs agree on at least 99 % of pixels.
    Every option: the SDEdit effect of the optimised protection is no further from the
    plain one's than another seed of the plain protection is (the natural spread).
    """
    exact = all(flag in EXACT_FLAGS for flag in label.split("+")) and label != "none"
    sdedit_result = report["sdedit"]
    spread = abs(sdedit_result["effect_other_seed"] - sdedit_result["effect_plain"])
    drop = sdedit_result["effect_plain"] - sdedit_result["effect_optimised"]
    holds_sdedit = drop <= max(spread, 1e-6)
    holds_direction = (report["first_step"]["sign_agreement"] >= EXACT_SIGN_AGREEMENT) if exact else True
    return {
        "exact_math_option": exact,
        "first_step_ok": holds_direction,
        "sdedit_ok": holds_sdedit,
        "sdedit_drop": drop,
        "seed_spread": spread,
        "strength_holds": bool(holds_direction and holds_sdedit),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Strength check of optimisation flags on a small model.")
    parser.add_argument(
        "--opt",
        default="channels-last,classic-attn,bf16,vae-ckpt,unet-ckpt",
        help="comma list of variants ('+' joins flags)",
    )
    parser.add_argument("--methods", default="sds-,advdm")
    parser.add_argument("--arch", default="tiny-random")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    # Run as a script: its per-variant summary lines are INFO records shown on the console.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from cloakbench.bench.perf.optimisations import parse_variants
    from cloakbench.bench.perf.runner import machine_description
    from cloakbench.core.provenance import code_identity

    torch.set_num_threads(min(2, torch.get_num_threads()))
    reports = []
    for variant in parse_variants(args.opt):
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            report = strength_report(variant.label, method=method, arch=args.arch, steps=args.steps, seed=args.seed)
            reports.append(report)
            log.info(
                f"{variant.label:>16} {method:>6}: first-step signs {report['first_step']['sign_agreement']:.4f} "
                f"cos {report['first_step']['cosine']:.5f}; "
                f"trace diff {report['trace_max_relative_difference']:.2e}; "
                f"SDEdit effect {report['sdedit']['effect_optimised']:.4f} vs plain "
                f"{report['sdedit']['effect_plain']:.4f} (seed spread {report['verdict']['seed_spread']:.4f}) "
                f"-> {'holds' if report['verdict']['strength_holds'] else 'DROPS'}"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": machine_description(), "versions": code_identity(), "reports": reports}, indent=1)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
