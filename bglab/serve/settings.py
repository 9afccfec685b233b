"""Server settings: one frozen dataclass, read from ``BGLAB_SERVE_*`` environment variables for worker processes.

``bglab serve --workers N`` starts uvicorn with an import string (``bglab.serve.app:create_app_from_env``),
so each worker process builds its own app; the command writes its settings to the environment
(:meth:`ServerSettings.to_env`) and every worker reads them back (:meth:`ServerSettings.from_env`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from bglab.errors import BackendError, ConfigError
from bglab.foreground.registry import DEFAULT_SEGMENTER, resolve
from bglab.io.limits import MAX_THREADS, MAX_WORKERS
from bglab.io.schema import Schema, declare

ENV_PREFIX = "BGLAB_SERVE_"

LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})
"""Names a loopback server answers to by default (the Host header check; see ``allowed_hosts``)."""

ANY_ADDRESS: frozenset[str] = frozenset({"0.0.0.0", "::", ""})



def reads_files(name: str) -> bool:
    """Whether a registered segmenter reads files by path (``mask-files``): clients send pixels, never paths,
    so the server refuses it (the fact is the registry's: ``BackendInfo.reads_files``)."""
    try:
        info = resolve(name)
    except BackendError:  # an unknown name is refused where it is looked up, with the choices
        return False
    return info.kind == "segmenter" and info.reads_files


@dataclass(frozen=True)
class ServerSettings:
    """Everything the HTTP server needs; defaults are safe for a laptop on loopback."""

    host: str = declare("127.0.0.1")
    port: int = declare(7860, lo=1, hi=65535)
    workers: int = declare(1, lo=1, hi=MAX_WORKERS)
    backend: str = declare(DEFAULT_SEGMENTER)  # default segmenter when a request names none
    backends: tuple[str, ...] = declare(())  # allow-list of segmenters clients may ask for; () = every registered one
    max_upload_bytes: int = declare(20 * 1024 * 1024, lo=1024)  # whole request body (image + background + fields)
    max_pixels: int = declare(40_000_000, lo=1)  # decoded image size (header check, before decoding): 40 MP
    concurrency: int = declare(1, lo=1, hi=MAX_THREADS)  # images processed at once per process (CPU threads)
    queue: int = declare(8, lo=0)  # requests allowed to wait for a slot per process; more get 503 + Retry-After
    timeout: float = declare(60.0, lo=0)  # seconds (> 0) per request (waiting + processing) before 504
    threads: int = declare(0, lo=0, hi=MAX_THREADS)  # CPU threads per model session; 0 = cores / workers
    device: str = declare("cpu")  # where ONNX models run: cpu | cuda | auto (bglab.foreground.onnxrt.check_device)
    # Host header allow-list (DNS rebinding: a web page must not drive a local server under another name).
    # () = the bound address only (127.0.0.1, localhost and ::1 for a loopback server; any Host when bound to
    # 0.0.0.0 / ::); "*" = any Host. Port suffixes are ignored.
    allowed_hosts: tuple[str, ...] = declare(())
    read_timeout: float = declare(30.0, lo=0)  # seconds (> 0) a request body may stall between chunks before 408
    keep_alive: float = declare(5.0, lo=0)  # seconds (> 0) an idle (or never used) connection is kept open

    def __post_init__(self) -> None:
        for f in SETTINGS.fields:  # the declared ranges; a float setting (seconds) must be above its lo
            v, lo, hi = getattr(self, f.name), f.lo, f.hi
            if lo is not None and (v < lo or (f.kind == "float" and v == lo)) or hi is not None and v > hi:
                span = (f"in [{lo}, {hi}]" if hi is not None else f"> {lo} seconds" if f.kind == "float"
                        else f">= {lo}")
                raise ConfigError(f"{f.name} must be {span}, got {v}", hint="see `bglab serve --help`")
        from bglab.foreground.onnxrt import check_device

        object.__setattr__(self, "device", check_device(self.device))  # cuda without onnxruntime-gpu: refused
        if reads_files(self.backend):
            raise ConfigError(f"backend {self.backend!r} cannot be served",
                              hint="it reads files by path; serve a model backend such as unet or chroma")

    @property
    def session_threads(self) -> int:
        """CPU threads per model session: ``threads``, or the cores shared out between the workers."""
        if self.threads:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.workers)

    def host_allow_list(self) -> frozenset[str] | None:
        """Lower-case Host names this server answers to; None when any Host is accepted."""
        names = {h.strip().lower().strip("[]") for h in self.allowed_hosts if h.strip()}
        if "*" in names:
            return None
        host = self.host.strip().lower().strip("[]")
        if host in ANY_ADDRESS:
            if not names:
                return None
        elif host in LOOPBACK_HOSTS:
            names |= LOOPBACK_HOSTS
        else:
            names.add(host)
        return frozenset(names)

    def allows(self, name: str) -> bool:
        """Whether clients may ask for backend ``name`` (refused backends never are)."""
        if reads_files(name):
            return False
        return not self.backends or name in self.backends or name == self.backend

    def to_env(self) -> dict[str, str]:
        """The settings as ``BGLAB_SERVE_*`` variables (read back by :meth:`from_env`)."""
        out = {}
        for key, value in asdict(self).items():
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            out[ENV_PREFIX + key.upper()] = text
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Settings from ``BGLAB_SERVE_*`` variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            default = f.default
            try:
                if isinstance(default, tuple):
                    kwargs[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
                elif isinstance(default, bool):
                    kwargs[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int):
                    kwargs[f.name] = int(raw)
                elif isinstance(default, float):
                    kwargs[f.name] = float(raw)
                else:
                    kwargs[f.name] = raw
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {f.name}") from None
        return cls(**kwargs)  # type: ignore[arg-type]


SETTINGS = Schema.of(ServerSettings)
