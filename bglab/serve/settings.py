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

    host: str = "127.0.0.1"
    port: int = 7860
    workers: int = 1
    backend: str = DEFAULT_SEGMENTER  # default segmenter when a request names none
    backends: tuple[str, ...] = ()  # allow-list of segmenters clients may ask for; () = every registered one
    max_upload_bytes: int = 20 * 1024 * 1024  # whole request body (image + background + form fields)
    max_pixels: int = 40_000_000  # decoded image size (header check, before decoding): 40 MP
    concurrency: int = 1  # images processed at once per process (threads doing CPU work)
    queue: int = 8  # requests allowed to wait for a slot per process; more get 503 + Retry-After
    timeout: float = 60.0  # seconds per request (waiting + processing) before 504
    threads: int = 0  # CPU threads per model session; 0 = cores / workers
    device: str = "cpu"  # where ONNX models run: cpu | cuda | auto (bglab.foreground.onnxrt.check_device)
    # Host header allow-list (DNS rebinding: a web page must not drive a local server under another name).
    # () = the bound address only (127.0.0.1, localhost and ::1 for a loopback server; any Host when bound to
    # 0.0.0.0 / ::); "*" = any Host. Port suffixes are ignored.
    allowed_hosts: tuple[str, ...] = ()
    read_timeout: float = 30.0  # seconds a request body may stall between chunks before 408
    keep_alive: float = 5.0  # seconds an idle (or never used) connection is kept open (uvicorn)

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.port <= 65535, f"port must be 1-65535, got {self.port}"),
            (1 <= self.workers <= MAX_WORKERS, f"workers must be in [1, {MAX_WORKERS}], got {self.workers}"),
            (self.max_upload_bytes >= 1024, f"max upload must be >= 1024 bytes, got {self.max_upload_bytes}"),
            (self.max_pixels >= 1, f"max pixels must be >= 1, got {self.max_pixels}"),
            (1 <= self.concurrency <= MAX_THREADS,
             f"concurrency must be in [1, {MAX_THREADS}], got {self.concurrency}"),
            (self.queue >= 0, f"queue must be >= 0, got {self.queue}"),
            (self.timeout > 0, f"timeout must be > 0 seconds, got {self.timeout}"),
            (0 <= self.threads <= MAX_THREADS, f"threads must be in [0, {MAX_THREADS}], got {self.threads}"),
            (self.read_timeout > 0, f"read timeout must be > 0 seconds, got {self.read_timeout}"),
            (self.keep_alive > 0, f"keep-alive must be > 0 seconds, got {self.keep_alive}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message, hint="see `bglab serve --help`")
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
