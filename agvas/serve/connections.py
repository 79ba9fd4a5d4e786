"""Slow and numerous clients: deadlines for the request head and body, and a cap on connections.

uvicorn already offers most of it, and these are its own options: `limit_concurrency` (at that many open
connections or running requests, new requests get 503), `timeout_keep_alive` (idle keep-alive
connections are closed) and `h11_max_incomplete_event_size` (the longest request head). Two gaps remain,
filled here as thinly as possible:

- uvicorn's h11 protocol starts no timer until a first response is sent, so a client that connects and
  never finishes its headers (slowloris) holds its connection forever. HeadDeadlineH11 arms a timer when
  the connection opens and after every response, and closes the connection if no request head has
  arrived when it fires; trickling bytes does not postpone it.
- A body shorter than its Content-Length, then silence, keeps the handler waiting in `receive()`.
  ReadTimeoutMiddleware bounds each wait for the next piece of the body and answers 408.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from agvas.serve.limits import run_guarded


class HeadDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol, plus: a request head must arrive within `timeout_header_s` of the
    connection opening (or of the previous response), else the connection is closed."""

    timeout_header_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.timeout_header_s, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        handle = getattr(self, "_head_deadline", None)
        if handle is not None:
            handle.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            self.timeout_keep_alive_handler()  # uvicorn's own way of closing an idle connection


@dataclass(frozen=True)
class ConnectionLimits:
    """The uvicorn side of `agvas serve`'s limits (the read timeout lives in the app)."""

    timeout_header_s: float = 10.0
    timeout_keep_alive_s: int = 5
    limit_concurrency: int = 256
    max_header_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if self.timeout_header_s <= 0 or self.timeout_keep_alive_s <= 0 or self.limit_concurrency < 1 \
                or self.max_header_bytes < 1024:
            raise ValueError(f"connection limits out of range: {self}")

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for uvicorn.Config / uvicorn.run."""
        protocol = type("HeadDeadlineH11", (HeadDeadlineH11,), {"timeout_header_s": self.timeout_header_s})
        return {"http": protocol, "limit_concurrency": self.limit_concurrency,
                "timeout_keep_alive": self.timeout_keep_alive_s,
                "h11_max_incomplete_event_size": self.max_header_bytes}


class _ReadTimedOut(Exception):
    pass


class ReadTimeoutMiddleware:
    """ASGI middleware: a request body that stalls for `timeout_s` gets a JSON 408 and the connection
    is closed. Only waits for body pieces are bounded; after the body, `receive()` is left alone (it
    then only reports a disconnect)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        timed_out = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                timed_out = True
                raise _ReadTimedOut() from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        if await run_guarded(self.app, scope, timed_receive, send, lambda: timed_out):
            message = (f"the request body stalled for {self.timeout_s:g} s before it was complete "
                       "(the server's --timeout-read)")
            await JSONResponse({"error": "timeout", "message": message}, status_code=408,
                               headers={"Connection": "close"})(scope, receive, send)
