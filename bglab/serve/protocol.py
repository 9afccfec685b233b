"""uvicorn's h11 protocol with a deadline for the request head: a connection that sends nothing, or dribbles its
headers (slowloris), is closed after ``read_timeout`` seconds (``BGLAB_SERVE_READ_TIMEOUT``).

uvicorn's own ``timeout_keep_alive`` only starts after a first response, and any byte received cancels it; a
stalled request *body* is the job of :class:`bglab.serve.app.LimitsMiddleware` (408), and a slow job the job
of the request ``timeout`` (504). ``bglab serve`` passes this class as uvicorn's ``http=``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose next request head has not arrived within the deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from bglab.serve.settings import ServerSettings

        self.head_timeout = ServerSettings.from_env().read_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
