"""Devices and dtypes as the command line names them: parsed once, checked before any work."""

from __future__ import annotations

import torch

from cloakbench.core.ldm import ModelError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here, or a ModelError saying which ones do."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"--device {device!r} is not a torch device; use cpu or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ModelError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    elif parsed.type not in ("cpu", "mps", "xpu", "meta"):
        raise ModelError(f"--device {device!r} is not supported here; use cpu or cuda:N")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return parsed


def available_memory_bytes(device: str | torch.device) -> int:
    """Free memory on ``device``: the GPU's free bytes (``torch.cuda.mem_get_info``), else the
    host's ``MemAvailable`` (``/proc/meminfo``; total physical memory where that file is absent)."""
    import os

    parsed = torch.device(device)
    if parsed.type == "cuda":
        return int(torch.cuda.mem_get_info(parsed)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
