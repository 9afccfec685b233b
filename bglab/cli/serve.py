"""``bglab serve``: the HTTP API and web page (FastAPI + uvicorn; needs the ``serve`` extra)."""

from __future__ import annotations

import os

import typer

from bglab.cli._common import device_option, err_console, esc
from bglab.foreground.registry import choices_help


def serve(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on; 127.0.0.1 = this machine only. The server has no "
                                  "authentication: bind other addresses only on a trusted network."),
    port: int = typer.Option(7860, "--port", help="TCP port to listen on."),
    workers: int = typer.Option(1, "--workers", "-w", min=1,
                                help="Worker processes; each loads its own model session once."),
    backend: str = typer.Option(None, "--backend", "-b",
                                help="Default segmenter when a request names none: "
                                     f"{choices_help('segmenter')} (see `bglab backends`)."),
    allow: list[str] = typer.Option(None, "--allow",
                                    help="Segmenters clients may choose (repeatable); default: every "
                                         "registered one except mask-files, which is never served."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb",
                                        help="Largest request body in MiB (image + background); 413 above."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels",
                                   help="Largest image in pixels, checked from the header before decoding; "
                                        "422 above."),
    concurrency: int = typer.Option(1, "--concurrency", min=1,
                                    help="Images processed at once per worker (threads doing CPU work)."),
    queue: int = typer.Option(8, "--queue", min=0,
                              help="Requests that may wait per worker; more get 503 with Retry-After."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request (waiting included); 504 after."),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="CPU threads per model session; 0 = CPU cores / workers."),
    device: str = device_option(),
    allow_host: list[str] = typer.Option(None, "--allow-host",
                                         help="Host header names the server answers to (repeatable; '*' = any); "
                                              "default: the --host address (127.0.0.1, localhost and ::1 on "
                                              "loopback). Guards against DNS rebinding."),
    read_timeout: float = typer.Option(30.0, "--read-timeout",
                                       help="Seconds a connection may take to send its request head, or stall "
                                            "in its body, before it is closed (slow or stalled clients)."),
    keep_alive: float = typer.Option(5.0, "--keep-alive", help="Seconds an idle connection is kept open."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: debug, info, warning, error."),
) -> None:
    """Serve the HTTP API (POST /api/remove, POST /api/segment, GET /api/backends, /healthz, /docs) and the
    web page at / until interrupted (Ctrl+C).

    Example: bglab serve --port 7860 -w 2
    """
    from bglab.errors import BglabError
    from bglab.foreground import DEFAULT_SEGMENTER, resolve
    from bglab.serve.settings import ServerSettings

    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart)
        import uvicorn
    except ImportError as exc:
        raise BglabError(f"bglab serve needs the 'serve' extra ({exc})",
                         hint="pip install 'bglab[serve]'") from None
    settings = ServerSettings(
        host=host, port=port, workers=workers, backend=backend or DEFAULT_SEGMENTER, backends=tuple(allow or ()),
        max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, concurrency=concurrency, queue=queue,
        timeout=timeout, threads=threads, allowed_hosts=tuple(allow_host or ()), read_timeout=read_timeout,
        keep_alive=keep_alive, device=device,
    )
    resolve(settings.backend, "segmenter", available=True)  # a clear error before the server starts
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] listening on {esc(host)}: anyone who can reach it can use the "
                          "server (there is no authentication)", highlight=False)
    if settings.host_allow_list() is None:
        err_console.print("[yellow]warning:[/] any Host header is accepted; name the server's host names with "
                          "--allow-host to guard against DNS rebinding", highlight=False)
    os.environ.update(settings.to_env())  # worker processes read their settings from here
    err_console.print(f"bglab serve: http://{esc(host)}:{port}/  (API docs /docs, {workers} worker(s), "
                      f"default backend {settings.backend})", highlight=False)
    from bglab.serve.protocol import GuardedH11Protocol

    # stalled connections: the request head must arrive within --read-timeout (GuardedH11Protocol), a body
    # may not stall longer (LimitsMiddleware, 408), idle keep-alive connections close after --keep-alive,
    # and h11 refuses request heads over 64 KiB
    uvicorn.run("bglab.serve.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=5, http=GuardedH11Protocol,
                timeout_keep_alive=max(1, round(settings.keep_alive)), h11_max_incomplete_event_size=64 * 1024)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
