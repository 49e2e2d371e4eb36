"""encoder-harden: the copier fine-tunes the VAE encoder so protected images encode like clean ones.

Xue et al., "Toward effective protection against diffusion based mimicry through score
distillation" (ICLR 2024, arXiv 2311.12832, Sec. 4) show that the encoder is the weak point a
latent-diffusion protection exploits: a perturbation of a few 8-bit levels moves the latent far
(``bench compare``'s analysis rows measure that ``δz / δx``). A copier who knows this fixes the
encoder, the adaptive attack of Carlini et al., "On Evaluating Adversarial Robustness"
(arXiv 1902.06705, Sec. 5: an attack designed against the defence's mechanism), in the form of
adversarial fine-tuning on the defence's own outputs (Madry et al., "Towards Deep Learning
Models Resistant to Adversarial Attacks", arXiv 1706.06083, with the attack replaced by the
public protection). Documented in docs/MIMICRY.md, "Adaptive attackers".
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cloakbench
from cloakbench.core.config import bounded, canonical_json
from cloakbench.core.images import check_images, from_uint8_array, load_images, pixel_hash, to_working_size
from cloakbench.core.io import write_atomic
from cloakbench.core.ldm import LDM
from cloakbench.mimicry.base import MIMICRY, AttackContext, Mimicry, PublicProtections
from cloakbench.mimicry.common import epoch_batches, note

log = logging.getLogger(__name__)

#: ``images = "toy-train"``: the toy model's training pictures (``cloakbench.core.toy_data``),
#: which ship with scikit-image and matplotlib and are disjoint by construction from ``samples``.
TOY_TRAIN = "toy-train"
#: The encoder parameters the copier trains; the decoder, the UNet and the text encoder stay frozen.
TRAINED_PARTS = ("encoder", "quant_conv")
#: Hardened encoders kept in memory by content key, so the cells of one worker load each once.
_LOADED: dict[str, dict[str, torch.Tensor]] = {}


def copier_images(source: str, size: int) -> tuple[torch.Tensor, list[str]]:
    """The copier's own pictures at ``size``² (short side resized, centre crop), and their names.

    ``source`` is ``toy-train`` or a folder (or any source the intake reads).
    """
    if source == TOY_TRAIN:
        from PIL import Image

        from cloakbench.core.toy_data import TRAIN, load_picture

        pixels = []
        for name in TRAIN:
            square = to_working_size(Image.fromarray(load_picture(name)), size, [], name)
            pixels.append(from_uint8_array(np.asarray(square.convert("RGB"))))
        return torch.stack(pixels), list(TRAIN)
    intake = load_images([source], size)
    if not intake.images:
        raise ValueError(f"encoder-harden.images: {source!r} holds no readable image; name a folder of pictures")
    return torch.stack([im.pixels for im in intake.images]), [im.name for im in intake.images]


@dataclass(frozen=True)
class EncoderHardenConfig:
    """Settings of the copier's encoder fine-tuning (see :class:`EncoderHarden`)."""

    against: str = "all"
    pairs: int = bounded(16, 1, 100_000)
    steps: int = bounded(200, 1, 1_000_000)
    learning_rate: float = bounded(1e-4, 0, 1, low_open=True)
    batch: int = bounded(4, 1, 4096)
    clean_weight: float = bounded(1.0, 0, 1e6)
    images: str = TOY_TRAIN
    seed: int = bounded(0, 0, 2**62)


@MIMICRY.register("encoder-harden")
class EncoderHarden(Mimicry):
    """Copier fine-tunes the VAE encoder on (clean, protected) pairs of its own images; the chain runs with it.

    Threat model (adaptive, white-box on the copier's own model): the copier has the attack model
    (``--attack-model``, the protection model by default), the *public* code of the protections
    it hardens against (``against``: one name, a comma list, or ``all`` — every protection tool of
    the registry, not the controls ``none`` and ``noise``), run with the run's settings of each on
    the tool's model (``cloakbench.bench.copier``), and ``pairs`` pictures of its own
    (``images``: ``toy-train``, the toy model's training pictures, or a folder), disjoint from
    the evaluated images (a picture whose pixels equal an evaluated one is refused). It does not
    know the artist's clean image, its seed or which budget was picked.

    Pairs: each copier picture ``x`` and ``x̃ = protect(x)`` (published 8-bit) for every
    protection of ``against``. Update (Adam, ``learning_rate``, batches of ``batch`` pairs drawn
    in shuffled passes, ``steps`` steps), with ``E`` the frozen encoder's posterior mean scaled
    by the VAE's factor ``s`` and ``E′`` the copy being trained (its ``encoder`` and
    ``quant_conv``; the decoder, UNet and text encoder frozen)::

        L = mean ‖s·E′(x̃) − s·E(x)‖² + clean_weight · mean ‖s·E′(x) − s·E(x)‖²

    (mean squared error per latent element, in scaled-latent units): protected pictures encode
    like their clean originals, clean pictures still encode as before, so the decoder and the
    UNet keep working with ``E′``. The rest of the chain (``encoder-harden+sdedit``,
    ``+inpaint``, ``+lora``) runs with ``E′`` (:meth:`adapt_model`); the images pass unchanged.

    Trained once per (model, ``against`` and the protections' identities, copier pictures,
    config): the weights are kept in ``context.cache_dir`` under that content key, so every
    cell of a run (each image, the clean twin, every protection) reuses one encoder. The loss
    of the first and last steps is in the cell's note.

    Defaults: 16 pairs per protection, 200 steps, Adam at 1e-4 (the learning rate of the
    VAE fine-tuning of Rombach et al.'s LDM autoencoders, arXiv 2112.10752, App. G), batch 4,
    clean weight 1. On toy (128², 16-channel latents) against one PGD protection at its
    ``--quick`` settings this trains on a 2-core CPU in about a minute (docs/MIMICRY.md,
    "Adaptive attackers").
    """

    # 2: its default `against=all` includes the amortized protector (issue 25), so its pairs changed.
    version = 2
    is_purification = True  # a stage before the attack
    adaptive = True
    adapts_model = True
    Config = EncoderHardenConfig
    # --quick: two pairs per protection, three steps
    QUICK = {"pairs": 2, "steps": 3}

    # -- what the copier trains against -------------------------------------------------
    def protection_names(self, context: AttackContext) -> list[str]:
        return self.copier_protections(self.public_protections(context))

    def copier_protections(self, public: PublicProtections) -> list[str]:
        """The protections of ``against`` (``all``: every public tool), each name checked, in order."""
        known = public.names()
        wanted = [n.strip() for n in self.config.against.split(",") if n.strip()]
        if wanted == ["all"]:
            return known
        if not wanted:
            raise ValueError("encoder-harden.against is empty; name a protection, a comma list, or all")
        for name in wanted:
            public.settings_identity(name)  # refuses an unknown name, naming the known ones
        return list(dict.fromkeys(wanted))

    def pictures(self, model, context: AttackContext) -> torch.Tensor:
        images, names = copier_images(self.config.images, model.resolution)
        if self.config.pairs > images.shape[0]:
            raise ValueError(
                f"encoder-harden.pairs = {self.config.pairs}, but {self.config.images!r} holds "
                f"{images.shape[0]} pictures; lower pairs or name a larger folder with encoder-harden.images"
            )
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(self.config.seed))
        chosen = order[: self.config.pairs].tolist()
        for index in chosen:
            if pixel_hash(images[index]) in context.held_out:
                raise ValueError(
                    f"encoder-harden: the copier's picture {names[index]!r} ({self.config.images}) is also an "
                    "evaluated image; the copier's images must be its own: name another folder with encoder-harden.images"
                )
        return images[chosen]

    @staticmethod
    def public_protections(context: AttackContext) -> PublicProtections:
        """The public protection code the harness hands in (the mimicry layer never imports protections)."""
        if context.protections is None:
            raise ValueError(
                "encoder-harden runs the public protection code, which the harness passes as "
                "AttackContext.protections; run it through bench compare (or pass "
                "cloakbench.bench.copier.RunProtections)"
            )
        return context.protections

    def cache_key(self, model, names: list[str], pictures: torch.Tensor, context: AttackContext) -> str:
        payload = {
            "stage": self.identity(),
            "model": model.identity(),
            "protections": [self.public_protections(context).identity(n) for n in names],
            "pictures": [pixel_hash(p) for p in pictures],
            "cloakbench": cloakbench.__version__,
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    # -- training -----------------------------------------------------------------------
    def make_pairs(
        self, pictures: torch.Tensor, names: list[str], context: AttackContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clean, protected)``, ``(len(names)·pairs, 3, H, W)`` each: every picture under every protection."""
        clean, protected = [], []
        for name in names:
            seed = int(hashlib.sha256(canonical_json([self.config.seed, "pairs", name]).encode()).hexdigest()[:15], 16)
            published = self.public_protections(context).protect(
                name, pictures, generator=torch.Generator().manual_seed(seed)
            )
            clean.append(pictures)
            protected.append(published.float().cpu())
        return torch.cat(clean), torch.cat(protected)

    def train(self, model, clean: torch.Tensor, protected: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[float]]:
        """The trained encoder parameters (float32, CPU) and the loss of every step."""
        vae = copy.deepcopy(model.vae)
        if next(vae.parameters()).dtype != torch.float32:  # train in float32 whatever the model runs in
            vae = vae.to(dtype=torch.float32)
        vae.requires_grad_(False)
        trained = [p for part in TRAINED_PARTS for p in getattr(vae, part).parameters()]
        for parameter in trained:
            parameter.requires_grad_(True)
        device, scale = model.device, model.scaling_factor

        def latent(module, images: torch.Tensor) -> torch.Tensor:
            return module.encode(LDM.to_model_range(images.to(device))).latent_dist.mean * scale

        with torch.no_grad():
            frozen = model.vae
            targets = torch.cat(
                [
                    latent(frozen, clean[i : i + self.config.batch].to(model.dtype)).float()
                    for i in range(0, len(clean), self.config.batch)
                ]
            )
        optimizer = torch.optim.Adam(trained, lr=self.config.learning_rate)
        batches = epoch_batches(
            len(clean),
            min(self.config.batch, len(clean)),
            self.config.steps,
            torch.Generator().manual_seed(self.config.seed),
        )
        losses = []
        for indices in batches:
            target = targets[indices].to(device)
            loss = torch.nn.functional.mse_loss(latent(vae, protected[indices].float()), target)
            if self.config.clean_weight > 0:
                loss = loss + self.config.clean_weight * torch.nn.functional.mse_loss(
                    latent(vae, clean[indices].float()), target
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        state = {
            f"{part}.{key}": value.detach().cpu().clone()
            for part in TRAINED_PARTS
            for key, value in getattr(vae, part).state_dict().items()
        }
        return state, losses

    def hardened_state(self, model, context: AttackContext) -> tuple[str, dict[str, torch.Tensor], dict]:
        """``(key, encoder parameters, facts)``: from the cache when this encoder was trained before."""
        from safetensors.torch import load_file, save_file

        names = self.protection_names(context)
        pictures = self.pictures(model, context)
        key = self.cache_key(model, names, pictures, context)
        folder = Path(context.cache_dir) / "encoder-harden" if context.cache_dir else None
        if key in _LOADED:
            return key, _LOADED[key], {"trained_here": False}
        if folder is not None and (folder / f"{key}.safetensors").is_file():
            state = load_file(str(folder / f"{key}.safetensors"))
            facts = json.loads((folder / f"{key}.json").read_text()) if (folder / f"{key}.json").is_file() else {}
            _LOADED[key] = state
            return key, state, {**facts, "trained_here": False}
        clean, protected = self.make_pairs(pictures, names, context)
        state, losses = self.train(model, clean, protected)
        facts = {
            "against": names,
            "pairs": len(clean),
            "steps": len(losses),
            "loss_first": losses[0],
            "loss_last": losses[-1],
        }
        if folder is not None:
            import tempfile

            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                save_file(state, str(Path(scratch) / "weights.safetensors"))
                write_atomic(folder / f"{key}.safetensors", (Path(scratch) / "weights.safetensors").read_bytes())
            write_atomic(folder / f"{key}.json", json.dumps({**facts, "loss_trace": losses}).encode())
        _LOADED[key] = state
        return key, state, {**facts, "trained_here": True}

    def adapt_model(self, model, *, generator: torch.Generator, context: AttackContext):
        """``model`` with the hardened encoder ``E′`` (a copy of the VAE; every other part shared).

        ``generator`` is unused: the encoder depends on ``seed`` only, so every cell of the run
        (each image, the clean twin, each protection) gets the same ``E′``.
        """
        key, state, facts = self.hardened_state(model, context)
        vae = copy.deepcopy(model.vae)
        missing = {f"{part}.{k}" for part in TRAINED_PARTS for k in getattr(vae, part).state_dict()} - set(state)
        if missing:
            raise ValueError(
                f"encoder-harden: cached encoder {key[:16]} lacks {sorted(missing)[:3]}; delete it and rerun"
            )
        for part in TRAINED_PARTS:
            prefix = f"{part}."
            getattr(vae, part).load_state_dict(
                {k[len(prefix) :]: v.to(model.device, model.dtype) for k, v in state.items() if k.startswith(prefix)}
            )
        vae.requires_grad_(False).eval()
        note(context, self.name, "encoder", key[:16])
        note(context, self.name, "against", ",".join(facts.get("against", [])))
        if "loss_first" in facts:
            note(context, self.name, "loss", f"{facts['loss_first']:.4g} -> {facts['loss_last']:.4g}")
        return dataclasses.replace(model, vae=vae, weights_hash=f"{model.weights_hash}+encoder-harden:{key[:16]}")

    def __call__(
        self, images: torch.Tensor, model, *, generator: torch.Generator, context: AttackContext
    ) -> torch.Tensor:
        """The images unchanged (float32, a new tensor): this stage changes the model, not the pixels."""
        check_images(images, self.name)
        return images.detach().to(torch.float32).clone()
