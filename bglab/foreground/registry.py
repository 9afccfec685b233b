"""Backend registry: ``--backend NAME`` resolves here everywhere (remove, preprocess, variants, eval-seg, serve).

Backends register a factory with :func:`register`; the factory is only imported and called when the backend
is asked for, so optional extras (mediapipe, rembg) cost nothing until used. Each :class:`BackendInfo` holds
every fact about its backend that callers need before loading it (kind, extra, whether it reads files by path,
which options name files); :func:`resolve` is the one name check the pipeline, variants, the server and the
experiment config use. Threading / providers for every backend come from one :class:`Runtime` object.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bglab.errors import BackendError

Kind = Literal["segmenter", "locator"]

DEFAULT_SEGMENTER = "unet-effnet"
"""The segmenter used when none is named (CLI, pipeline ``segment`` step, server)."""


@dataclass(frozen=True)
class Runtime:
    """Where and how backends run: CPU threads per session, the device and ONNX Runtime providers (one place to
    set them). ``device``: ``cpu`` (the default: ``providers`` as given), ``cuda`` (``CUDAExecutionProvider``
    first; an error when this onnxruntime lacks it) or ``auto`` (CUDA where available, else the CPU);
    :func:`bglab.foreground.onnxrt.session_providers` turns it into the providers a session gets."""

    threads: int = 0  # 0 = library default (all cores)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    device: str = "cpu"

    @classmethod
    def from_env(cls) -> Runtime:
        """Read ``BGLAB_THREADS`` (int) and ``BGLAB_PROVIDERS`` (comma list) from the environment."""
        threads = int(os.environ.get("BGLAB_THREADS", "0") or 0)
        prov = os.environ.get("BGLAB_PROVIDERS", "")
        providers = tuple(p.strip() for p in prov.split(",") if p.strip()) or ("CPUExecutionProvider",)
        return cls(threads=threads, providers=providers)

    @classmethod
    def for_threads(cls, threads: int, device: str = "cpu") -> Runtime:
        """The runtime of one batch worker: ``threads`` CPU threads (OpenCV's too), or the environment's default
        with 0, on ``device`` (``cpu`` | ``cuda`` | ``auto``: :func:`bglab.foreground.onnxrt.session_providers`)."""
        if threads <= 0:
            return replace(cls.from_env(), device=device)
        import cv2

        cv2.setNumThreads(threads)
        return cls(threads=threads, device=device)


@dataclass(frozen=True)
class BackendInfo:
    """What the registry knows about one backend before it is loaded."""

    name: str
    kind: Kind
    module: str  # module that defines the factory, imported lazily
    factory: str  # attribute name of the factory in that module
    summary: str
    extra: str | None = None  # pip extra that provides its dependencies, if optional
    requires: tuple[str, ...] = field(default_factory=tuple)  # importable modules it needs
    # options that make ``requires`` unnecessary (``rembg`` given ``model_path=`` runs the file without rembg)
    requires_unless: tuple[str, ...] = field(default_factory=tuple)
    # its answer is looked up by the input's file path, not computed from pixels (mask files, box lists): a
    # pipeline gives it the original file, and the server (which receives pixels, never paths) refuses it
    reads_files: bool = False
    path_options: tuple[str, ...] = field(default_factory=tuple)  # options naming a file or folder
    screen: bool = False  # keys out a coloured screen: mask QC also checks that a screen was found

    @property
    def served(self) -> bool:
        """Whether the HTTP server can run it: a segmenter that works from the pixels alone."""
        return self.kind == "segmenter" and not self.reads_files


_BACKENDS: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> None:
    """Add a backend (a new backend is one module plus one ``register`` line in ``bglab/foreground/__init__.py``)."""
    _BACKENDS[info.name] = info


def backends(kind: Kind | None = None) -> list[BackendInfo]:
    """All registered backends, optionally only segmenters or locators, in registration order."""
    return [b for b in _BACKENDS.values() if kind is None or b.kind == kind]


def choices_help(kind: Kind) -> str:
    """The backends of ``kind`` for a CLI help text, the default marked: ``"unet (default), chroma, ..."``."""
    return ", ".join(f"{b.name} (default)" if b.name == DEFAULT_SEGMENTER else b.name for b in backends(kind))


def path_options() -> frozenset[str]:
    """Every option name that some backend declares as a file or folder path (resolved against a config's folder)."""
    return frozenset(k for b in _BACKENDS.values() for k in b.path_options)


def resolve(name: str | None, kind: Kind | None = None, options: Mapping[str, Any] | None = None, *,
            available: bool = False) -> BackendInfo:
    """The record of backend ``name`` (None: :data:`DEFAULT_SEGMENTER`), checked before anything is loaded:
    registered, of ``kind`` when given and, with ``available=True``, its extras importable given ``options``.

    Raises :class:`BackendError` saying what is wrong and naming the choices.
    """
    info = _info(DEFAULT_SEGMENTER if name is None else name)
    if kind is not None and info.kind != kind:
        others = ", ".join(b.name for b in backends(kind))
        raise BackendError(f"backend {info.name!r} is a {info.kind}, not a {kind}", hint=f"{kind}s: {others}")
    if available:
        ok, why = is_available(info.name, **dict(options or {}))
        if not ok:
            raise BackendError(f"backend {info.name!r} is not available: {why}")
    return info


def is_available(name: str, **options: Any) -> tuple[bool, str]:
    """Whether a backend's optional dependencies import (given these options); returns (ok, reason-if-not)."""
    info = _info(name)
    if any(options.get(k) is not None for k in info.requires_unless):
        return True, ""
    if info.requires:
        importlib.import_module(info.module)  # the backend module may prepare its extras' import (mediapipe)
    for mod in info.requires:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            fix = f"pip install 'bglab[{info.extra}]'" if info.extra else f"install {mod}"
            return False, f"needs {mod} ({type(exc).__name__}: {exc}); {fix}"
    return True, ""


def _info(name: str) -> BackendInfo:
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS)) or "none"
        raise BackendError(f"unknown backend {name!r}", hint=f"choose one of: {known}") from None


def create(name: str, *, kind: Kind | None = None, runtime: Runtime | None = None, **options: Any) -> Any:
    """Build a backend instance by name; options go to its factory (e.g. ``threshold=0.5``)."""
    info = resolve(name, kind, options, available=True)
    module = importlib.import_module(info.module)
    factory: Callable[..., Any] = getattr(module, info.factory)
    runtime = runtime or Runtime.from_env()
    check_options(name, factory, runtime=runtime, **options)
    return factory(runtime=runtime, **options)


def check_options(name: str, fn: Callable[..., Any], /, *args: Any, also: tuple[str, ...] = (), **options: Any
                  ) -> None:
    """Raise a :class:`BackendError` naming the accepted options (``also`` first) if ``fn(*args, **options)``
    would not bind: an unknown or missing option is the caller's mistake, not a crash inside the backend."""
    sig = inspect.signature(fn)
    try:
        sig.bind(*args, **options)
    except TypeError as exc:
        params = [p.name for p in sig.parameters.values()
                  if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "runtime"][len(args):]
        params = [*also, *params]
        raise BackendError(f"bad options for backend {name!r}: {exc}",
                           hint=f"{name} takes: {', '.join(params) or 'no options'}") from None
