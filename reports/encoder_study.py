"""The report's encoder study: each protection's encoder amplification beside its strength against
SDEdit, grouped by model family (issue 23, item 8; docs/PROTECTIONS.md, "The encoder study").

Xue et al. (ICLR 2024, arXiv:2311.12832, §4) find the latent diffusion model weak at its VAE
encoder: a protection moves the latent far more than its pixel change would suggest, and the
cheap SDS approximations work because the gradient through the encoder dominates. This panel
sets, per model the protections were crafted on, each protection's

- **amplification** ``(‖δz‖/‖z‖) / (‖δx‖/‖x‖)`` (``pair = analysis``,
  ``metrics/analysis/encoder.py``: posterior means), and the same divided by the ``noise``
  protection's on that model (``÷ noise``: > 1 means the encoder amplifies this perturbation
  more than random noise of the same budget);
- **strength against SDEdit**: PSNR of SDEdit(protected) against SDEdit(clean), same seed
  (``pair = attack_vs_clean_attack``; lower = the edit moved further), one column per SDEdit
  strength in the run, the attack run on the same model (transfer rows are the leaderboard's).

Means of per-image means with the report's 95 % interval over images (reports.stats.over_images)
(``reports/stats.py``). Models are grouped by their family (ε-UNet, flow transformer) as the
model zoo declares it; a model folder outside the zoo is read for its family the way a
folder is loaded (``core/folders.py``). A run merged from several models (``bench report RUN1
RUN2 …``) shows each model under its family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cloakbench.core.families import FAMILIES
from cloakbench.core.schema import Pair
from cloakbench.reports import format as fmt
from cloakbench.reports.leaderboard import _plan_eps as plan_eps
from cloakbench.reports.leaderboard import cell
from cloakbench.reports.run import Run
from cloakbench.reports.stats import Estimate, over_images

NOISE = "noise"
NO_PROTECTION = "none"
STRENGTH_METRIC = "psnr"
STRENGTH_ATTACK = "sdedit"


def model_family(model: str) -> str:
    """The family a model name or folder declares; ``unknown`` when neither the zoo nor a folder says."""
    from cloakbench.core.zoo import ZOO

    if model in ZOO:
        return ZOO.get(model).family
    if model and Path(model).is_dir():
        from cloakbench.core.folders import folder_family

        return folder_family(Path(model))
    return "unknown"


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["status"] == "ok") & rows["value"].notna()]


def _estimate(rows: pd.DataFrame) -> Estimate:
    return over_images(rows["value"].astype(float), rows["image"])


def _label(protection: str, setting: str, eps: dict[str, str]) -> str:
    """The protection and its budget (the swept setting, else the plan's ``eps``), as the leaderboard names it."""
    budget = setting or eps.get(protection, "")
    return f"{protection} ({budget})" if budget else protection


def encoder_study(run: Run) -> dict[str, Any] | None:
    """The panel's groups (family → models → protection rows), or ``None`` without analysis rows."""
    rows = run.rows
    analysis = _ok(rows[(rows["pair"] == Pair.ANALYSIS.value) & (rows["metric"] == "amplification")])
    if analysis.empty:
        return None
    edits = _ok(
        rows[
            (rows["pair"] == Pair.ATTACK_VS_CLEAN_ATTACK.value)
            & (rows["mimicry"] == STRENGTH_ATTACK)
            & (rows["purification"].fillna("") == "")
            & (rows["metric"] == STRENGTH_METRIC)
            & (rows["attack_model"] == rows["protect_model"])
        ]
    )
    settings = sorted(set(edits["setting"].astype(str)), key=lambda s: (len(s), s))
    eps = plan_eps(run)
    families: dict[str, list[dict[str, Any]]] = {}
    for model in sorted(set(analysis["protect_model"])):
        on_model = analysis[analysis["protect_model"] == model]
        model_edits = edits[edits["protect_model"] == model]
        noise_rows = on_model[on_model["protection"] == NOISE]
        noise = _estimate(noise_rows) if not noise_rows.empty else None
        protection_rows = []
        keys = on_model[["protection", "protection_setting"]].fillna("").drop_duplicates()
        for protection, setting in sorted(keys.itertuples(index=False), key=lambda k: (k[0] != NOISE, k[0], k[1])):
            if protection == NO_PROTECTION:
                continue
            mine = on_model[
                (on_model["protection"] == protection) & (on_model["protection_setting"].fillna("") == setting)
            ]
            amplification = _estimate(mine)
            ratio = amplification.mean / noise.mean if noise is not None and noise.mean else None
            edit_cells = []
            for strength in settings:
                chosen = model_edits[
                    (model_edits["protection"] == protection)
                    & (model_edits["protection_setting"].fillna("") == setting)
                    & (model_edits["setting"].astype(str) == strength)
                ]
                edit_cells.append(cell(_estimate(chosen), STRENGTH_METRIC))
            protection_rows.append(
                {
                    "name": _label(protection, setting, eps),
                    "is_reference": protection == NOISE,
                    "amplification": cell(amplification, "amplification"),
                    "ratio": "—" if ratio is None else f"{fmt.number(ratio, 'amplification')}×",
                    "edits": edit_cells,
                }
            )
        family = model_family(model)
        families.setdefault(family, []).append({"model": model, "rows": protection_rows})
    return {
        "settings": settings,
        "families": [
            {"family": family, "description": FAMILIES.get(family, "not a zoo family"), "models": models}
            for family, models in sorted(families.items())
        ],
    }
