"""The child process of ``bench perf``: measure ONE configuration and write one JSON row.

Run as ``python -m cloakbench.bench.perf.worker --config JSON --out FILE``. A fresh process per
configuration makes its peak RSS, its CUDA peaks and its allocator state its own
(docs/PERFORMANCE.md). The protection is driven through the engine's step API
(``state = protection.prepare(images, model, generator=)``, ``protection.step(state)``
= one PGD step), so what is timed is exactly the step a protection runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("cloakbench.bench.perf.worker")


def seeded_images(batch: int, resolution: int, seed: int):
    """Smooth seeded images in [0, 1] (content does not change the cost; a seed keeps runs equal)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, resolution // 8), max(2, resolution // 8), generator=generator)
    return torch.nn.functional.interpolate(
        coarse, size=(resolution, resolution), mode="bilinear", align_corners=False
    ).clamp(0, 1)


def build_protection(method: str, mode: str):
    from cloakbench.protections import PROTECTIONS

    cls = PROTECTIONS.get(method)
    if not (hasattr(cls, "prepare") and hasattr(cls, "step")):
        raise SystemExit(f"{method} has no step-level API (prepare/step); it cannot be timed per step")
    # A method's untimed setup made small (PERF_SETUP, e.g. ASPL's class images): only steps are timed.
    overrides: dict[str, Any] = dict(getattr(cls, "PERF_SETUP", {}))
    if mode != "fair":
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        if "reference_mode" not in fields:
            raise SystemExit(f"{method} has no reference_mode setting; measure it in fair mode only")
        overrides["reference_mode"] = True
        if mode == "reference-2enc":
            overrides["reference_double_encode"] = True
    return cls.from_overrides(overrides)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loss_value(loss) -> float | None:
    import torch

    if loss is None:
        return None
    if isinstance(loss, torch.Tensor):
        return float(loss.detach().float().mean())
    try:
        return float(loss)
    except (TypeError, ValueError):
        return None


def _flop_counter():
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # an old torch: FLOPs are then simply not reported
        return contextlib.nullcontext()
    return FlopCounterMode(display=False)


def _total_flops(counter) -> int | None:
    total = getattr(counter, "get_total_flops", None)
    return int(total()) if total is not None else None


#: Registered random-weight architectures, which can be initialised directly on a GPU.
RANDOM_ARCHS = ("sd15-arch", "sd21-arch", "sdxl-arch", "sd3-arch")


def _load(config, device):
    """``load_model``; random architectures are built straight on the GPU when there is one.

    Random initialisation of 1-3 B parameters takes tens of seconds on a CPU, and every
    configuration loads its own model; under ``torch.device`` the parameters are created
    and initialised on the GPU. Where that fails (an architecture that draws seeded CPU
    tensors while building), the model is built on the CPU as usual.
    """
    import torch

    from cloakbench.core.zoo import load_model

    if device.type == "cuda" and config.arch in RANDOM_ARCHS:
        try:
            with torch.device(device):
                return load_model(config.arch, device=device, dtype=config.dtype, seed=config.seed)
        except RuntimeError as error:
            log.warning("building %s on %s failed (%s); building it on the CPU", config.arch, device, error)
            gc.collect()
            torch.cuda.empty_cache()
    return load_model(config.arch, device=device, dtype=config.dtype, seed=config.seed)


def measure(config) -> dict[str, Any]:
    """Load, optimise, prepare, warm up, time ``repeats`` × ``steps`` steps, count saved bytes."""
    import torch

    from cloakbench.bench.perf.optimisations import apply_optimisations
    from cloakbench.bench.perf.runner import machine_description, median
    from cloakbench.bench.profiling import (
        count_saved_bytes,
        current_rss_bytes,
        parameter_storages,
        peak_rss_bytes,
        reset_peak_rss,
    )
    from cloakbench.core.provenance import code_identity
    from cloakbench.protections.reference_costs import uses_unet_checkpointing

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device here")
    started = time.perf_counter()
    model = _load(config, device)
    applied = apply_optimisations(model, config.optimisations)
    load_s = time.perf_counter() - started
    resolution = config.resolution or model.resolution
    protection = build_protection(config.method, config.mode)
    default_steps = getattr(protection.config, "steps", None)
    images = seeded_images(config.batch, resolution, config.seed).to(device)
    if "channels_last" in applied:
        images = images.contiguous(memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    step = protection.step
    if config.inject_delay_s > 0:
        # Test-only: make this method slower on purpose, to prove the regression check fails.
        # A busy wait, not a sleep: it must cost CPU time as well as wall-clock time.
        inner = step

        def step(state, _inner=inner, _delay=config.inject_delay_s):
            result = _inner(state)
            until = time.process_time() + _delay
            while time.process_time() < until:
                pass
            return result

    weights_bytes = model.weights_bytes()
    gc.collect()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline_cuda = int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None
    rss_reset = reset_peak_rss()
    baseline_rss = current_rss_bytes() or peak_rss_bytes()

    start = time.perf_counter()
    state = protection.prepare(images, model, generator=generator)
    _sync(device)
    prepare_s = time.perf_counter() - start
    losses: list[float | None] = []
    warmup_times = []
    for _ in range(config.warmup):
        start = time.perf_counter()
        losses.append(_loss_value(step(state)))
        _sync(device)
        warmup_times.append(time.perf_counter() - start)
    step_times: list[list[float]] = []
    cpu_times: list[list[float]] = []
    for _ in range(config.repeats):
        times, cpu = [], []
        for _ in range(config.steps):
            start, cpu_start = time.perf_counter(), time.process_time()
            losses.append(_loss_value(step(state)))
            _sync(device)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
        step_times.append(times)
        cpu_times.append(cpu)
    # Saved-for-backward bytes and FLOPs on one more (untimed) step: the hooks cost time.
    # Parameters are excluded: they are in memory whether a step saves them or not.
    # FLOPs (matmul, convolution, attention; forward and backward) are deterministic:
    # the measure of work that a shared CPU's load cannot blur.
    exclude = parameter_storages(*model.modules().values())
    counting_notes: list[str] = []
    saved, flops_per_step = None, None
    for with_flops in (True, False):
        # torch.compile may refuse the dispatch mode or the hooks; then count what it allows.
        flops = _flop_counter() if with_flops else contextlib.nullcontext()
        try:
            with count_saved_bytes(exclude=exclude) as saved, flops:
                losses.append(_loss_value(step(state)))
            flops_per_step = _total_flops(flops) if with_flops else None
            break
        except Exception as error:
            saved = None
            counting_notes.append(
                f"{'FLOP and saved-bytes' if with_flops else 'saved-bytes'} counting failed: "
                f"{type(error).__name__}: {error}"[:300]
            )
            log.warning(counting_notes[-1])
    _sync(device)

    peak_rss = peak_rss_bytes()
    row: dict[str, Any] = {
        **json.loads(config.to_json()),
        "resolution": resolution,
        "status": "ok",
        "reference_mode": config.mode != "fair",
        "default_steps": default_steps,
        "load_s": load_s,
        "prepare_s": prepare_s,
        "warmup_s": warmup_times,
        "step_times_s": step_times,
        "s_per_step_repeats": [sum(t) / len(t) for t in step_times],
        # CPU time of this process per step: on a CPU shared with other jobs it moves far
        # less than wall-clock (with one torch thread it is the step's own compute).
        "cpu_s_per_step_repeats": [sum(t) / len(t) for t in cpu_times],
        "weights_bytes": weights_bytes,
        "saved_bytes": None if saved is None else int(saved.bytes),
        "saved_param_bytes": None if saved is None else int(saved.excluded_bytes),
        "saved_tensors": None if saved is None else int(saved.tensors),
        "flops_per_step": flops_per_step,
        "notes": counting_notes,
        "baseline_rss_bytes": baseline_rss,
        "peak_rss_bytes": peak_rss,
        "rss_growth_bytes": max(0, peak_rss - baseline_rss),
        "rss_peak_reset": rss_reset,
        "losses": losses,
        "optimisations_applied": applied,
        "protection": protection.identity(),
    }
    row["s_per_step"] = median(row["s_per_step_repeats"])
    row["cpu_s_per_step"] = median(row["cpu_s_per_step_repeats"])
    row["s_per_step_min"] = min(t for times in step_times for t in times)
    row["s_per_image"] = row["s_per_step"] * default_steps / config.batch if default_steps else None
    if device.type == "cuda":
        row["peak_cuda_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        row["peak_cuda_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        row["baseline_cuda_allocated_bytes"] = baseline_cuda
        row["peak_bytes"] = row["peak_cuda_allocated_bytes"]
        row["attack_bytes"] = row["peak_cuda_allocated_bytes"] - weights_bytes
    else:
        row["peak_cuda_allocated_bytes"] = row["peak_cuda_reserved_bytes"] = None
        # On CPU the weights are already in the post-load RSS: the growth is the attack's memory.
        row["peak_bytes"] = row["attack_bytes"] = row["rss_growth_bytes"]
    row["machine"] = machine_description(config.device)
    row["versions"] = code_identity()
    row["settings"] = {
        k: row[k]
        for k in ("steps", "warmup", "repeats", "dtype", "device", "optimisations", "seed", "threads", "inject_delay_s")
    }
    row["settings"]["torch_threads"] = torch.get_num_threads()
    # Whether the UNet ran gradient-checkpointed: reference mode does as the reference's
    # LDM config does (use_checkpoint: True); --opt unet-ckpt asks for it at fair cost.
    row["settings"]["unet_gradient_checkpointing"] = bool(
        uses_unet_checkpointing(protection) or applied.get("unet_checkpointing")
    )
    row["settings"]["reference_double_encode"] = bool(getattr(protection.config, "reference_double_encode", False))
    return row


def measure_json(config_json: str) -> str:
    """:func:`measure` from and to JSON text (what a forked child sends back)."""
    from cloakbench.bench.perf.runner import PerfConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return json.dumps(measure(PerfConfig.from_json(config_json)), sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    from cloakbench.bench.perf.runner import PerfConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="PerfConfig as JSON")
    parser.add_argument("--out", required=True, type=Path, help="where to write the JSON row")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    row = measure(PerfConfig.from_json(args.config))
    args.out.write_text(json.dumps(row, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
