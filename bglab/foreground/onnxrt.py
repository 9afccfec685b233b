"""One ONNX Runtime session set-up for every ONNX backend (``unet``, ``u2netp``, ``rembg`` with ``model_path``,
the box detector).

Threads, device and providers come from the :class:`~bglab.foreground.registry.Runtime`: device ``cpu`` keeps
its providers, ``auto`` puts ``CUDAExecutionProvider`` first where this onnxruntime has it (onnxruntime-gpu),
``cuda`` demands it (:func:`check_device`: a clear error before any work). Providers the installed onnxruntime
lacks are dropped (CPU is always there); a file ONNX Runtime cannot load is a :class:`~bglab.errors.BackendError`
naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bglab.errors import BackendError, ConfigError
from bglab.foreground.registry import Runtime

DEVICES = ("auto", "cpu", "cuda")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
CUDA_HINT = ("pip install onnxruntime-gpu (in place of onnxruntime; its CUDA / cuDNN versions must match the "
             "driver: nvidia-smi), or use --device auto (CUDA where there is one) / --device cpu")


def check_device(device: str) -> str:
    """``device`` checked (``auto`` | ``cpu`` | ``cuda``, lower-cased): ``cuda`` where this onnxruntime has no
    CUDA provider is a :class:`~bglab.errors.ConfigError` naming the fix. Commands call it before any work."""
    name = str(device).strip().lower()
    if name not in DEVICES:
        raise ConfigError(f"unknown device {device!r}", hint=f"use {' | '.join(DEVICES)}")
    if name == "cuda":
        import onnxruntime as ort

        if CUDA not in ort.get_available_providers():
            raise ConfigError("device cuda asked for, but this onnxruntime has no CUDAExecutionProvider "
                              f"(it has: {', '.join(ort.get_available_providers())})", hint=CUDA_HINT)
    return name


def session_providers(runtime: Runtime) -> list[str]:
    """The providers an ONNX Runtime session gets for ``runtime``: with device ``auto`` and CUDA available
    ``['CUDAExecutionProvider', 'CPUExecutionProvider']``; without it, or with device ``cpu``, the runtime's
    providers this onnxruntime has (CPU at least)."""
    import onnxruntime as ort

    device = check_device(runtime.device)
    available = ort.get_available_providers()
    wanted = list(runtime.providers)
    if device != "cpu" and CUDA in available:
        wanted = [CUDA, *[p for p in wanted if p != CUDA]]
    if CPU not in wanted:
        wanted.append(CPU)  # the fallback for operators CUDA lacks
    return [p for p in wanted if p in available] or [CPU]


def open_session(path: str | Path, runtime: Runtime | None = None, *, hint: str) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``; ``hint`` is the fix shown when it cannot be loaded."""
    import onnxruntime as ort

    path = Path(path)
    runtime = runtime or Runtime.from_env()
    opts = ort.SessionOptions()
    if runtime.threads > 0:
        opts.intra_op_num_threads = runtime.threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = session_providers(runtime)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        raise BackendError(f"ONNX Runtime cannot load the model ({type(exc).__name__}: {exc})", path=path,
                           hint=hint) from None
    if check_device(runtime.device) == "cuda" and CUDA not in session.get_providers():  # installed, but no GPU / driver
        raise BackendError("device cuda asked for, but ONNX Runtime could not start CUDA (no GPU, or a CUDA / "
                           "cuDNN that does not match this onnxruntime-gpu)", path=path, hint=CUDA_HINT)
    return session
