"""The HTTP API and web page: ``create_app(settings)`` builds a FastAPI app; ``bglab serve`` runs it with uvicorn.

Design:

- **One model session per process per backend**, created on first use and cached (:class:`ModelCache`).
- **CPU work off the event loop**: decoding, segmentation, compositing and encoding run in a bounded thread
  pool (:class:`JobRunner`, ``concurrency`` threads). At most ``queue`` more requests may wait; beyond that
  the server answers 503 with ``Retry-After``. A request that takes longer than ``timeout`` seconds (waiting
  included) gets 504; its slot stays taken until the thread really finishes, so timed-out work cannot pile up.
- **Limits**: the request body is counted while it streams in (Content-Length checked first): 413 over
  ``max_upload_bytes``. Images are decoded from their bytes (file names and content types are ignored) with
  ``max_pixels`` checked from the header before decoding: 422. No URLs are fetched, no paths are accepted,
  the ``mask-files`` backend (which reads files by path) is refused, nothing is unpickled.
- **Every error is JSON** ``{"error": {"code": ..., "message": ...}}``: validation errors, 404s, 405s,
  bglab errors and unexpected ones (500, message without internals; the traceback goes to the log).
- ``/docs`` is a small self-hosted page that lists the endpoints from ``/openapi.json`` (FastAPI's own
  docs pages load their scripts from a CDN; this server works offline).
"""

from __future__ import annotations

import asyncio
import base64
import re
import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bglab.errors import BackendError, BglabError, ConfigError, ImageReadError, ImageWriteError, MaskError
from bglab.io.colors import DEFAULT_COLOR_NAME
from bglab.serve.settings import ServerSettings

log = logging.getLogger("bglab.serve")
T = TypeVar("T")

MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
     b"frame-ancestors 'none'; form-action 'self'"),
]
_STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                 415: "unsupported_media_type", 422: "validation_error", 503: "busy", 504: "timeout"}


# --------------------------------------------------------------------------------------------------------------
# errors


class ApiError(StarletteHTTPException):
    """An HTTP error with a machine-readable ``code``; rendered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. bad_image, too_large, busy")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _bglab_error_status(exc: BglabError) -> tuple[int, str]:
    if isinstance(exc, ImageReadError):
        return 422, "bad_image"
    if isinstance(exc, MaskError):
        return 422, "bad_mask"
    if isinstance(exc, BackendError):
        return 503, "backend_unavailable"  # names are checked before; this is a load failure (missing model)
    if isinstance(exc, ImageWriteError):
        return 400, "cannot_encode"
    if isinstance(exc, ConfigError):
        return 400, "bad_parameter"
    return 400, "bad_request"


_ABS_PATH = re.compile(r"(?<![\w.])(?:/[^/\s'\"():,;]+)+/?")


def _scrub_paths(text: str) -> str:
    """Absolute paths in ``text`` cut to their last part: clients are not told where bglab is installed."""
    return _ABS_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)


def public_message(exc: BglabError) -> str:
    """The error as clients see it: the message and hint, with the file named but no absolute path."""
    text = exc.message if exc.path is None else f"{exc.path.name}: {exc.message}"
    if exc.hint:
        text = f"{text} ({exc.hint})"
    return _scrub_paths(text)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and code == "not_found" and message == "Not Found":
            message = f"no such page or endpoint: {request.url.path} (see /docs)"
        elif exc.status_code == 405 and message == "Method Not Allowed":
            message = f"{request.method} is not allowed on {request.url.path} (see /docs)"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", _validation_message(exc))

    @app.exception_handler(BglabError)
    async def _bglab(request: Request, exc: BglabError) -> JSONResponse:
        status, code = _bglab_error_status(exc)
        return error_response(status, code, public_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error",
                              f"unexpected {type(exc).__name__} on the server; the server log has the details")


# --------------------------------------------------------------------------------------------------------------
# body limit and security headers (pure ASGI, so the body is counted while it streams in)


def _host_name(value: str) -> str:
    """The name part of a Host header: ``[::1]:7860`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1:].split("]", 1)[0]
    if v.count(":") == 1:
        return v.split(":", 1)[0]
    return v


class LimitsMiddleware:
    """413 for request bodies over ``max_bytes`` (Content-Length first, then counted chunks); security headers;
    400 for a Host header not in ``allowed_hosts`` (None: any); 408 when the body stalls ``read_timeout`` s."""

    def __init__(self, app: ASGIApp, max_bytes: int, allowed_hosts: frozenset[str] | None = None,
                 read_timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.allowed_hosts = allowed_hosts
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
            if host is not None and _host_name(host) not in self.allowed_hosts:
                if scope["type"] != "http":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await error_response(400, "bad_host", "this server does not answer to that Host name (DNS "
                                     "rebinding guard); use the address it listens on, or add the name with "
                                     "bglab serve --allow-host")(scope, receive, send)
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        limit = self.max_bytes
        too_large = (f"the request body is over the server's upload limit of {limit:,} bytes "
                     f"({limit / 2**20:.1f} MiB); send a smaller image")
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await error_response(400, "bad_request", "invalid Content-Length header")(
                        scope, receive, send_with_headers)
                    return
                if declared > limit:
                    await error_response(413, "too_large", too_large)(scope, receive, send_with_headers)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            if self.read_timeout is None:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.read_timeout)
                except TimeoutError:
                    raise ApiError(408, "timeout", f"the request body stalled for {self.read_timeout:g} s; "
                                   "send it again") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(413, "too_large", too_large)
            return message

        await self.app(scope, counting_receive, send_with_headers)


# --------------------------------------------------------------------------------------------------------------
# models and jobs


class ModelCache:
    """One segmenter per backend name in this process, created on first use (thread-safe) and kept."""

    def __init__(self, threads: int, device: str = "cpu") -> None:
        from bglab.foreground import Runtime

        self.runtime = Runtime.from_env()
        self.runtime = Runtime(threads=threads or self.runtime.threads, providers=self.runtime.providers,
                               device=device)
        self._models: dict[str, Any] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        model = self._models.get(name)
        if model is None:
            with self._lock:
                model = self._models.get(name)
                if model is None:
                    from bglab.foreground import create

                    t0 = time.perf_counter()
                    model = create(name, kind="segmenter", runtime=self.runtime)
                    log.info("loaded backend %s in %.2f s", name, time.perf_counter() - t0)
                    self._models[name] = model
                    path = getattr(model, "model_path", None)
                    if path is not None:
                        try:  # the file as verified at load; check() re-verifies when it changes
                            st = os.stat(path)
                            self._stamps[name] = (st.st_size, st.st_mtime_ns)
                        except OSError:
                            pass
        return model

    @property
    def loaded(self) -> list[str]:
        return sorted(self._models)

    def check(self, name: str) -> str | None:
        """None when backend ``name`` loads and its model file still matches its checksum; else why not (no
        absolute paths). The checksum is re-verified when the file's size or modification time changed."""
        try:
            model = self.get(name)
            path, info = getattr(model, "model_path", None), getattr(model, "info", None)
            if path is not None and isinstance(info, dict) and info.get("sha256"):
                st = os.stat(path)
                stamp = (st.st_size, st.st_mtime_ns)
                if self._stamps.setdefault(name, stamp) != stamp:
                    from bglab.foreground.unet import verify_model

                    verify_model(path, info, path.with_suffix(".json"))
                    self._stamps[name] = stamp
        except BglabError as exc:
            with self._lock:
                self._models.pop(name, None)  # the next request (or check) loads it again
                self._stamps.pop(name, None)
            return public_message(exc)
        except OSError as exc:
            with self._lock:
                self._models.pop(name, None)
                self._stamps.pop(name, None)
            return _scrub_paths(f"the model file cannot be read: {exc.strerror or exc}")
        return None


class JobRunner:
    """A bounded thread pool for CPU work: ``concurrency`` running, ``queue`` waiting, the rest refused (503)."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.limit = concurrency + queue
        self._executor = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="bglab-job")
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished (running or waiting), timed-out jobs included
        self._avg_seconds = 1.0

    @property
    def pending(self) -> int:
        return self._pending

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time to drain the current backlog."""
        return max(1, math.ceil(self._avg_seconds * self._pending / self.concurrency))

    async def run(self, fn: Callable[[], T], timeout: float) -> T:
        with self._lock:
            if self._pending >= self.limit:
                busy = True
            else:
                busy = False
                self._pending += 1
        if busy:
            raise ApiError(503, "busy", f"the server is busy ({self._pending} requests in progress); "
                           "retry after the number of seconds in the Retry-After header",
                           headers={"Retry-After": str(self.retry_after())})
        t0 = time.perf_counter()

        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn()
            finally:
                self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * (time.perf_counter() - start)

        try:
            future = self._executor.submit(timed)
        except RuntimeError:  # executor shut down (server stopping)
            self._done(None)
            raise ApiError(503, "busy", "the server is shutting down", headers={"Retry-After": "5"}) from None
        future.add_done_callback(self._done)
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except TimeoutError:
            future.cancel()  # only succeeds while it is still waiting; a running job finishes on its own
            wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it now
            raise ApiError(504, "timeout", f"the request took longer than the server's limit of {timeout:g} s "
                           f"(waited and worked {time.perf_counter() - t0:.1f} s); try a smaller image or "
                           "a faster backend") from None

    def _done(self, future: concurrent.futures.Future | None) -> None:
        with self._lock:
            self._pending -= 1
        if future is not None and not future.cancelled():
            future.exception()  # mark it retrieved (a timed-out job's error is not awaited)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------------------------
# response models


class SegmentResult(BaseModel):
    width: int
    height: int
    backend: str
    coverage: float = Field(description="foreground fraction of the image (mask >= threshold)")
    boxes: list[list[int]] = Field(description="one [x0, y0, x1, y1] pixel box per foreground region "
                                   "(right / bottom edges exclusive), largest first")
    mask_png_base64: str = Field(description="the soft mask as an 8-bit greyscale PNG, base64")
    status: str = Field("done", description="mask QC: done, suspect (a rule broken, see qc) or not-found "
                                            "(no foreground); rules in docs/trust.md")
    qc: list[str] = Field(default_factory=list, description="the QC rules the mask broke, with the figures")
    hint: str = Field("", description="a better backend for this case, when the mask is not done")


class BackendItem(BaseModel):
    name: str
    kind: str
    available: bool
    summary: str
    served: bool = Field(description="whether this server accepts it as `backend` (segmenters only)")
    default: bool
    reason: str = Field("", description="why it is not available or not served")


class Health(BaseModel):
    status: str
    version: str
    default_backend: str
    loaded_backends: list[str]
    pending: int
    workers: int
    problem: str | None = None  # why the status is not ok (the default backend's model cannot be loaded)


# --------------------------------------------------------------------------------------------------------------
# the app


def _web_file(name: str) -> bytes:
    return resources.files("bglab.serve").joinpath("web", name).read_bytes()


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>bglab API</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css">
</head>
<body data-page="docs"><main>
<h1>bglab HTTP API</h1>
<p>The machine-readable description is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3).
This page lists it without any external script; the web page is at <a href="/">/</a>.</p>
<div id="api-docs" aria-live="polite">Loading /openapi.json&hellip;</div>
</main><script src="/static/app.js"></script></body></html>
"""


def _boxes(mask: np.ndarray, threshold: float, min_fraction: float = 0.1) -> list[list[int]]:
    import cv2

    fg = (mask >= threshold).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    rows = sorted((stats[i] for i in range(1, n)), key=lambda s: -int(s[4]))
    if not rows:
        return []
    keep = max(1, int(rows[0][4]) * min_fraction)  # like refine: specks of the soft edge are not regions
    return [[int(x), int(y), int(x + w), int(y + h)] for x, y, w, h, area in rows if area >= keep]


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """Build the app (API, web page, docs) for ``settings`` (defaults: :class:`ServerSettings`)."""
    import bglab
    from bglab import ops
    from bglab.background.remove import RemoveOptions, apply_mode, prepare_mask
    from bglab.foreground import backends as registered, is_available
    from bglab.io.colors import parse_color
    from bglab.io.files import decode_image, encode_image

    s = settings or ServerSettings()
    models = ModelCache(s.session_threads, s.device)
    runner = JobRunner(s.concurrency, s.queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        runner.shutdown()

    app = FastAPI(
        title="bglab",
        version=bglab.__version__,
        summary="Background removal and segmentation of photos, offline on a CPU.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = s
    app.state.models = models
    app.state.runner = runner
    app.add_middleware(LimitsMiddleware, max_bytes=s.max_upload_bytes, allowed_hosts=s.host_allow_list(),
                       read_timeout=s.read_timeout)
    _install_error_handlers(app)
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": text}
        for status, text in [(400, "bad parameter or backend"), (413, "upload too large"),
                             (422, "not a readable image, too many pixels, or invalid form fields"),
                             (503, "busy (see Retry-After) or backend unavailable"), (504, "timed out")]
    }

    availability: dict[str, tuple[bool, str]] = {}

    def available(name: str) -> tuple[bool, str]:
        # importing an optional extra (mediapipe, rembg) to find out is slow and big: once per process
        if name not in availability:
            availability[name] = is_available(name)
        return availability[name]

    async def check_backend(name: str | None) -> str:
        name = (name or "").strip() or s.backend
        known = {b.name: b for b in registered()}
        served = sorted(n for n, b in known.items()  # without importing optional extras on the event loop
                        if b.kind == "segmenter" and s.allows(n) and availability.get(n, (not b.requires,))[0])
        if name not in known:
            raise ApiError(400, "unknown_backend", f"unknown backend {name!r}; this server offers: "
                           f"{', '.join(served)} (see /api/backends)")
        if known[name].kind != "segmenter":
            raise ApiError(400, "unknown_backend", f"backend {name!r} is a {known[name].kind}, not a segmenter; "
                           f"use one of: {', '.join(served)}")
        if known[name].reads_files:
            raise ApiError(400, "backend_not_allowed", f"backend {name!r} reads files by path and is not "
                           f"served over HTTP; use one of: {', '.join(served)}")
        if not s.allows(name):
            raise ApiError(400, "backend_not_allowed", f"this server does not offer backend {name!r}; "
                           f"use one of: {', '.join(served)}")
        ok, why = availability.get(name) or await run_in_threadpool(available, name)
        if not ok:
            raise ApiError(400, "backend_unavailable", f"backend {name!r} is not installed here: {why}")
        return name

    def segment_mask(image: np.ndarray, backend: str, opts: RemoveOptions) -> np.ndarray:
        return prepare_mask(models.get(backend).predict(image), opts)

    def mask_qc(image: np.ndarray, mask: np.ndarray, backend: str, threshold: float) -> tuple[str, list[str], str]:
        """QC of one served mask (bglab.ops.qc, default rules at the request's threshold): status, reasons, hint."""
        from bglab.foreground.qc import QCRules, backend_hint, check_mask, uses_screen

        chk = check_mask(mask, QCRules(threshold=min(threshold, 0.999)), image=image, screen=uses_screen(backend))
        hint = "" if chk.status == "done" else backend_hint(backend, chk.flags, int(chk.status == "not-found"))
        return chk.status, list(chk.reasons), hint

    @app.get("/healthz", response_model=Health, tags=["meta"], summary="Liveness, load and the default model",
             responses={503: {"model": Health, "description": "the default backend's model cannot be used"}})
    async def healthz() -> Any:
        problem = await run_in_threadpool(models.check, s.backend)
        health = Health(status="ok" if problem is None else "error", version=bglab.__version__,
                        default_backend=s.backend, loaded_backends=models.loaded, pending=runner.pending,
                        workers=s.workers, problem=problem)
        if problem is not None:
            return JSONResponse(health.model_dump(), status_code=503)
        return health

    @app.get("/api/backends", response_model=list[BackendItem], tags=["api"], summary="Registered backends")
    async def list_backends() -> list[BackendItem]:
        out = []
        for b in registered():
            ok, why = await run_in_threadpool(available, b.name)
            served = b.kind == "segmenter" and s.allows(b.name)
            reason = why or ("" if served else ("not a segmenter" if b.kind != "segmenter"
                                                else "reads files by path" if b.reads_files
                                                else "not in this server's allow-list"))
            out.append(BackendItem(name=b.name, kind=b.kind, available=ok, summary=b.summary, served=served,
                                   default=b.name == s.backend, reason=reason))
        return out

    @app.post("/api/remove", tags=["api"], summary="Remove or change the background of one image",
              response_class=Response, responses={
                  200: {"content": {m: {} for m in MEDIA_TYPES.values()},
                        "description": "the result image (headers X-Bglab-Coverage, X-Bglab-Backend, "
                                       "X-Bglab-Status: done / suspect / not-found, X-Bglab-QC: the reasons)"},
                  **errors})
    async def remove(
        image: Annotated[UploadFile, File(description="the photo (any common format; decoded by content)")],
        background: Annotated[UploadFile | None, File(description="replacement background, mode swap")] = None,
        backend: Annotated[str | None, Form(description="segmenter (GET /api/backends); default: "
                                            "the server's")] = None,
        mode: Annotated[Literal["cutout", "mask", "color", "colour", "blur", "swap", "crop"],
                        Form(description="colour is the same as color")] = "cutout",
        color: Annotated[str, Form(max_length=32,
                                   description="#rrggbb, r,g,b or a name (mode color)")] = DEFAULT_COLOR_NAME,
        blur: Annotated[float, Form(ge=0, le=100, description="Gaussian sigma in px (mode blur)")] = 15.0,
        fit: Annotated[Literal["cover", "stretch", "tile"], Form(description="swap fitting")] = "cover",
        margin: Annotated[float, Form(ge=0, le=2, description="crop margin, fraction of the box")] = 0.1,
        threshold: Annotated[float, Form(ge=0, le=1, description="mask threshold")] = 0.5,
        format: Annotated[Literal["png", "webp", "jpeg"], Form(description="output format")] = "png",
    ) -> Response:
        name = await check_backend(backend)
        mode = "color" if mode == "colour" else mode  # type: ignore[assignment]
        if format == "jpeg" and mode == "cutout":
            raise ApiError(400, "bad_parameter", "a cut-out has transparency, which JPEG cannot store; "
                           "use format png or webp")
        opts = RemoveOptions(mode=mode, color=parse_color(color), blur=blur, fit=fit, margin=margin,
                             threshold=threshold)
        if mode == "swap" and background is None:
            raise ApiError(400, "bad_parameter", "mode 'swap' needs a second file field 'background'")
        data = await image.read()
        bg_data = await background.read() if (background is not None and mode == "swap") else None

        def job() -> tuple[bytes, float, np.ndarray, tuple[str, list[str], str]]:
            img = decode_image(data, name="image", max_pixels=s.max_pixels)
            bg = decode_image(bg_data, name="background", max_pixels=s.max_pixels) if bg_data is not None else None
            mask = segment_mask(img, name, opts)
            result = apply_mode(img, mask, opts, background=bg)
            qc = mask_qc(img, mask, name, threshold)
            return encode_image(result, format), float(ops.coverage(mask, threshold)), img, qc

        t0 = time.perf_counter()
        body, coverage, img, (status, reasons, _hint) = await runner.run(job, s.timeout)
        headers = {"X-Bglab-Backend": name, "X-Bglab-Coverage": f"{coverage:.4f}", "X-Bglab-Status": status,
                   "X-Bglab-QC": "; ".join(reasons).encode("ascii", "replace").decode("ascii"),
                   "X-Bglab-Size": f"{img.shape[1]}x{img.shape[0]}",
                   "X-Bglab-Seconds": f"{time.perf_counter() - t0:.3f}",
                   "Content-Disposition": f'inline; filename="result.{format}"', "Cache-Control": "no-store"}
        return Response(body, media_type=MEDIA_TYPES[format], headers=headers)

    @app.post("/api/segment", response_model=SegmentResult, tags=["api"],
              summary="Foreground mask, coverage and boxes of one image", responses=errors)
    async def segment(
        image: Annotated[UploadFile, File(description="the photo (any common format; decoded by content)")],
        backend: Annotated[str | None, Form(description="segmenter; default: the server's")] = None,
        threshold: Annotated[float, Form(ge=0, le=1, description="mask threshold")] = 0.5,
        refine: Annotated[bool, Form(description="drop stray regions and fill holes")] = True,
    ) -> SegmentResult:
        name = await check_backend(backend)
        opts = RemoveOptions(mode="mask", threshold=threshold, refine=refine)
        data = await image.read()

        def job() -> SegmentResult:
            img = decode_image(data, name="image", max_pixels=s.max_pixels)
            mask = segment_mask(img, name, opts)
            png = encode_image(np.round(mask * 255).astype(np.uint8), "png")
            status, reasons, hint = mask_qc(img, mask, name, threshold)
            return SegmentResult(width=img.shape[1], height=img.shape[0], backend=name,
                                 coverage=round(float(ops.coverage(mask, threshold)), 6),
                                 boxes=_boxes(mask, threshold),
                                 mask_png_base64=base64.b64encode(png).decode("ascii"),
                                 status=status, qc=reasons, hint=hint)

        return await runner.run(job, s.timeout)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(_web_file("index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:  # a fixed list: no paths from clients
            raise ApiError(404, "not_found", f"no static file {name!r}")
        return Response(_web_file(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings from ``BGLAB_SERVE_*`` variables (see ``bglab serve``)."""
    return create_app(ServerSettings.from_env())
