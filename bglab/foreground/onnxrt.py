"""One ONNX Runtime session set-up for every ONNX backend (``unet``, ``u2netp``, ``rembg`` with ``model_path``).

Threads and providers come from the :class:`~bglab.foreground.registry.Runtime`; providers the installed
onnxruntime lacks are dropped (CPU is always there); a file ONNX Runtime cannot load is a
:class:`~bglab.errors.BackendError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bglab.errors import BackendError
from bglab.foreground.registry import Runtime


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
    providers = [p for p in runtime.providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        raise BackendError(f"ONNX Runtime cannot load the model ({type(exc).__name__}: {exc})", path=path,
                           hint=hint) from None
