"""The request-body limit, enforced while the body streams in, before anything parses or spools it.

A declared Content-Length over the limit is refused at once; a chunked body is counted as it arrives
and cut off when it crosses the limit. Either way the client gets a JSON 413. The rest of a refused
body is read and dropped (up to DRAIN_LIMIT) first: a client still writing its upload when the server
hangs up sees a connection reset, not the 413 that says what to change.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_LIMIT = 64 * 2**20


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """ASGI middleware: bodies over `max_bytes` get a 413 {"error", "message"} response."""

    def __init__(self, app: ASGIApp, max_bytes: int, hint: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.hint = hint

    def _refusal(self, size: int, exact: bool) -> JSONResponse:
        amount = f"{size / 2**20:.2f} MB" if exact else f"more than {self.max_bytes / 2**20:.2f} MB"
        message = f"the request body is {amount}; this server accepts at most {self.max_bytes / 2**20:.2f} MB"
        return JSONResponse({"error": "payload_too_large", "message": f"{message}{self.hint}"}, status_code=413,
                            headers={"Connection": "close"})

    async def _drain(self, receive: Receive, already: int) -> None:
        seen = already
        while seen <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= DRAIN_LIMIT:
                await self._drain(receive, 0)
            await self._refusal(int(declared), exact=True)(scope, receive, send)
            return

        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    if message.get("more_body", False):
                        await self._drain(receive, received)
                    raise _TooLarge()
            return message

        if await run_guarded(self.app, scope, limited_receive, send, lambda: exceeded):
            await self._refusal(received, exact=False)(scope, receive, send)


async def run_guarded(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                      tripped: Callable[[], bool]) -> bool:
    """Run `app` with a `receive` that raises once a body limit trips; from then on the app's own reply
    (whatever it made of the cut-off body) is dropped. True when the caller must answer instead: the
    limit tripped before the app started its response."""
    started = False

    async def guarded_send(message: Message) -> None:
        nonlocal started
        if tripped():
            return
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, guarded_send)
    except Exception:
        if not tripped():
            raise
    return tripped() and not started
