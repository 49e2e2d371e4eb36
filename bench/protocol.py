"""A leaderboard protocol: the versioned TOML file that makes two people's numbers comparable.

A protocol (``protocols/v1-toy.toml``; docs/LEADERBOARD.md, "The protocol") fixes the model, the
images by their pixel SHA-256, the budgets, the attacker pool (non-adaptive and adaptive), the
seeds, the metrics and the headline statistic. A **released** protocol is immutable: its file's
SHA-256 must be listed in ``protocols/RELEASED.sha256`` (:data:`RELEASED_LIST`), and a released
file whose bytes no longer match is refused here, before any work, with a sentence saying to
make a new version instead. A ``draft`` protocol (not yet pinned) runs only when asked for.

:func:`compare_spec` turns a protocol and a protection list into the :class:`CompareSpec` of the
one compare harness (:mod:`cloakbench.bench.compare`): the protocol adds no second way of
running cells, only the settings of a run.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from cloakbench.bench.spec import CompareSpec
from cloakbench.core.provenance import PROJECT_ROOT, sha256_file

PROTOCOLS_DIR = PROJECT_ROOT / "protocols"
RELEASED_LIST = PROTOCOLS_DIR / "RELEASED.sha256"
STATUSES = ("released", "draft")


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One protocol file, read and checked (see the module docstring; fields as in the TOML)."""

    id: str
    path: Path
    sha256: str
    status: str
    title: str
    model: str
    seeds: tuple[int, ...]
    prompt: str
    images_source: str
    resolution: int
    image_hashes: dict[str, str]  # image name -> pixel SHA-256 at the working size
    budget_field: str
    budgets: tuple[float, ...]
    non_adaptive: tuple[str, ...]
    adaptive: tuple[str, ...]
    attack_settings: dict[str, dict[str, Any]]
    protection_settings: dict[str, dict[str, Any]]  # empty in a real protocol: every protection at its defaults
    metrics: tuple[str, ...]
    imperceptibility: tuple[str, ...]
    strength: tuple[str, ...]
    headline_metric: str
    rules: dict[str, Any]

    @property
    def attackers(self) -> tuple[str, ...]:
        return self.non_adaptive + self.adaptive

    @property
    def tolerance(self) -> tuple[float, float]:
        """``(absolute, relative)`` agreement a recomputed cell must reach in ``bench leaderboard verify``."""
        return float(self.rules.get("tolerance_absolute", 1e-3)), float(self.rules.get("tolerance_relative", 1e-3))

    def budget_setting(self, value: float) -> str:
        """The run's ``protection_setting`` of one budget (``eps=8``): what reports read."""
        return f"{self.budget_field}={value:g}"

    @property
    def image_source(self) -> str:
        """The image source for the compare spec: ``samples``, or the folder resolved against the repository root."""
        if self.images_source == "samples" or Path(self.images_source).is_absolute():
            return self.images_source
        return str(PROJECT_ROOT / self.images_source)

    def plain(self) -> dict[str, Any]:
        """What :func:`cloakbench.reports.entry.figures` reads of the protocol."""
        return {
            "budgets": [self.budget_setting(b) for b in self.budgets],
            "non_adaptive": list(self.non_adaptive),
            "adaptive": list(self.adaptive),
            "imperceptibility": list(self.imperceptibility),
            "strength": list(self.strength),
            "headline_metric": self.headline_metric,
        }

    def identity(self) -> dict[str, str]:
        return {"id": self.id, "sha256": self.sha256, "status": self.status}


def released_hashes(path: Path = RELEASED_LIST) -> dict[str, str]:
    """``file name -> SHA-256`` of every released protocol (``sha256sum`` format)."""
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            found[name.strip()] = digest
    return found


def resolve(name_or_path: str) -> Path:
    """``v1-toy`` (a file under ``protocols/``) or a path to a protocol TOML file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" or candidate.is_file():
        return candidate
    return PROTOCOLS_DIR / f"{name_or_path}.toml"


def _require(table: dict, key: str, kind: type | tuple, path: Path, where: str = "") -> Any:
    if key not in table or not isinstance(table[key], kind):
        name = f"{where}.{key}" if where else key
        raise ProtocolError(f"{path}: {name} is missing or of the wrong type; see docs/LEADERBOARD.md, 'The protocol'")
    return table[key]


def load_protocol(name_or_path: str, *, allow_draft: bool = False) -> Protocol:
    """Read and check a protocol; a released file whose bytes changed, or a draft (unless allowed), is refused."""
    path = resolve(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROTOCOLS_DIR.glob("*.toml"))) or "none"
        raise ProtocolError(f"--protocol {name_or_path}: no such protocol file ({path}); known protocols: {known}")
    digest = sha256_file(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(f"{path} is not valid TOML ({error}); restore it from the repository") from None
    status = _require(data, "status", str, path)
    if status not in STATUSES:
        raise ProtocolError(f"{path}: status {status!r} is neither 'released' nor 'draft'")
    released = released_hashes()
    if status == "released" and released.get(path.name) != digest:
        raise ProtocolError(
            f"{path} says it is released but its SHA-256 {digest[:16]}… is not the released one "
            f"({(released.get(path.name) or 'none listed')[:16]}… in {RELEASED_LIST.name}): a released protocol "
            "never changes; restore the file (git checkout) and put changes in a new version"
        )
    if status == "draft" and not allow_draft:
        raise ProtocolError(
            f"{path} is a draft protocol (not released, so its entries are not comparable yet); pass --draft to run it anyway"
        )
    images = _require(data, "images", dict, path)
    budgets = _require(data, "budgets", dict, path)
    attackers = _require(data, "attackers", dict, path)
    metrics = _require(data, "metrics", dict, path)
    headline = _require(data, "headline", dict, path)
    protocol = Protocol(
        id=_require(data, "id", str, path),
        path=path,
        sha256=digest,
        status=status,
        title=str(data.get("title", "")),
        model=_require(data, "model", str, path),
        seeds=tuple(int(s) for s in _require(data, "seeds", list, path)),
        prompt=str(data.get("prompt", "a photo")),
        images_source=_require(images, "source", str, path, "images"),
        resolution=int(_require(images, "resolution", int, path, "images")),
        image_hashes=dict(_require(images, "sha256", dict, path, "images")),
        budget_field=_require(budgets, "field", str, path, "budgets"),
        budgets=tuple(float(v) for v in _require(budgets, "values", list, path, "budgets")),
        non_adaptive=tuple(_require(attackers, "non_adaptive", list, path, "attackers")),
        adaptive=tuple(_require(attackers, "adaptive", list, path, "attackers")),
        attack_settings=dict(attackers.get("settings", {})),
        protection_settings=dict(data.get("protections", {}).get("settings", {})),
        metrics=tuple(_require(metrics, "compute", list, path, "metrics")),
        imperceptibility=tuple(_require(metrics, "imperceptibility", list, path, "metrics")),
        strength=tuple(_require(metrics, "strength", list, path, "metrics")),
        headline_metric=_require(headline, "metric", str, path, "headline"),
        rules=dict(data.get("rules", {})),
    )
    if protocol.id != path.stem:
        raise ProtocolError(f"{path}: id {protocol.id!r} must be the file's name ({path.stem!r})")
    if protocol.headline_metric not in protocol.strength:
        raise ProtocolError(f"{path}: headline.metric {protocol.headline_metric!r} is not one of metrics.strength")
    return protocol


def check_images(protocol: Protocol, intake) -> None:
    """Refuse images that are not the protocol's, by pixel hash at the working size (names must match too)."""
    found = {image.name: image.pixel_hash for image in intake.images}
    wanted = protocol.image_hashes
    missing = sorted(set(wanted) - set(found))
    changed = sorted(name for name in set(wanted) & set(found) if wanted[name] != found[name])
    extra = sorted(set(found) - set(wanted))
    if missing or changed or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"pixels differ for {', '.join(changed)}"] if changed else []
        parts += [f"not in the protocol: {', '.join(extra)}"] if extra else []
        raise ProtocolError(
            f"the images of {protocol.images_source} are not protocol {protocol.id}'s ({'; '.join(parts)}); "
            "restore them from the repository"
        )


def check_budget_field(protocol: Protocol, methods: list[str]) -> None:
    """Refuse a protection that has no setting named by the protocol's budget field (it could not be swept)."""
    from cloakbench.protections import PROTECTIONS

    for name in methods:
        config = PROTECTIONS.get(name).Config
        if protocol.budget_field not in {f.name for f in dataclasses.fields(config)}:
            raise ProtocolError(
                f"--methods {name}: it has no {protocol.budget_field!r} setting, so protocol {protocol.id} cannot "
                f"run it at budgets {', '.join(f'{b:g}' for b in protocol.budgets)}; leave it out"
            )


def protection_key(name: str) -> str:
    """A protection's name for ``--set``/``--sweep``: kind-qualified when a mimicry stage shares it (``noise``)."""
    from cloakbench.mimicry import MIMICRY

    return f"protection:{name}" if name in MIMICRY else name


def compare_spec(
    protocol: Protocol,
    methods: list[str],
    out: Path,
    *,
    images: list[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
    command: str = "",
) -> CompareSpec:
    """The compare run of ``protocol`` for ``methods`` (``none`` is added by the plan).

    ``images`` replaces the protocol's image source (``verify`` recomputes a sample of images;
    the hashes are checked by the caller); ``overrides`` adds settings of a protection (an
    external tool's folder), never of the protocol's attackers.
    """
    budgets = ",".join(f"{b:g}" for b in protocol.budgets)
    sweeps = {protection_key(name): {protocol.budget_field: budgets} for name in methods if name != "none"}
    return CompareSpec(
        images=images or [protocol.image_source],
        methods=",".join(methods),
        attacks=",".join(protocol.attackers),
        metrics=",".join(protocol.metrics),
        model=protocol.model,
        out=out,
        device=device,
        seed=protocol.seeds[0],
        seeds=list(protocol.seeds),
        prompt=protocol.prompt,
        overrides={
            **{name: dict(table) for name, table in protocol.attack_settings.items()},
            **{protection_key(name): dict(table) for name, table in protocol.protection_settings.items()},
            **(overrides or {}),
        },
        sweeps=sweeps,
        write_report=False,
        command=command,
    )
