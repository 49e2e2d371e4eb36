"""What the model a picture was protected against really is, said in one sentence.

A protection is an adversarial perturbation against one model (docs/PROTECTIONS.md): it is
only evidence of protection against that model and, at best, models like it. The default
``--model toy`` is a small LDM this project trains on small pictures (models/toy/MODEL_CARD.md),
and ``tiny-random`` / ``sd15-arch`` / ``sd21-arch`` / ``sdxl-arch`` have *random* weights (they
exist to measure cost). Neither is a model a copier uses, so ``bench protect`` and
``bench check`` print this sentence on the console and record it in the sidecar's summary.
"""

from __future__ import annotations

from dataclasses import dataclass

HOW_TO_USE_A_REAL_MODEL = (
    "to protect against a real model, pass --model <local diffusers folder> (e.g. a Stable Diffusion 1.5 "
    "download); `bench models` lists the models present here"
)


@dataclass(frozen=True)
class TargetModel:
    """``kind``: ``toy`` (shipped, trained by this project), ``random-weights`` or ``supplied`` (yours)."""

    name: str
    kind: str
    real: bool
    sentence: str


def describe_target(spec: str) -> TargetModel:
    """The honest one-sentence description of ``--model spec`` (no model is loaded)."""
    from cloakbench.core.zoo import ZOO

    entry = ZOO.get(spec) if spec in ZOO else None
    if entry is not None and entry.weights == "shipped":
        return TargetModel(
            spec,
            "toy",
            False,
            f"The model '{spec}' is a small toy diffusion model trained by this project on small pictures, "
            "not Stable Diffusion or any model copiers use: this file is protected against the toy only and "
            f"says nothing about real models; {HOW_TO_USE_A_REAL_MODEL}.",
        )
    if entry is not None and entry.weights == "random":
        return TargetModel(
            spec,
            "random-weights",
            False,
            f"The model '{spec}' has random weights (it exists for tests and cost measurements): a perturbation "
            f"against it protects against nothing; {HOW_TO_USE_A_REAL_MODEL}.",
        )
    return TargetModel(
        spec,
        "supplied",
        True,
        f"Protected against the model you supplied ({spec}); other models, and fine-tuning on your pictures, "
        "were not evaluated.",
    )
