"""Which machine computed a result: the facts that decide whether training repeats bit for bit (CPU model, the
instruction set torch's kernels use, torch version, threads), recorded with each experiment session and each
benchmark so a figure can be traced to the kind of machine that made it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`, else ``None``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """CPU model and count, platform, Python; with torch installed also its version and the CPU capability its
    kernels dispatch to (``AVX2``, ``AVX512``, ...): CPU training is bit-reproducible for one config, seed and
    thread count (the caller records that) only on machines that agree on these."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def reproducibility_key(info: dict[str, Any]) -> tuple[Any, ...]:
    """What two sessions must share for their runs to repeat bit for bit: CPU model, kernel instruction set,
    torch version and, where the caller recorded it, the device (threads are set per run)."""
    return info.get("cpu"), info.get("cpu_capability"), info.get("torch"), info.get("device")
