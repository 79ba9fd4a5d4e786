"""`agvas serve`: the web page and the HTTP API in one process (see agvas.serve).

The checkpoint is loaded before the port is bound, so a missing or broken checkpoint is a clear
error at start-up, not a server that answers 503 to everyone.
"""

from __future__ import annotations

import typer
from rich.console import Console

from agvas.cli.common import CHECKPOINT_HELP


def serve(
    checkpoint: str | None = typer.Option(None, help=CHECKPOINT_HELP),
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback exposes the server"),
    port: int = typer.Option(7860, min=0, max=65535, help="port to listen on"),
    max_upload_mb: float = typer.Option(20.0, min=0.01, help="largest accepted image file, in MB"),
    max_pixels: int | None = typer.Option(None, min=1, help="largest accepted image, in pixels [default: "
                                                             "4096*4096]"),
    max_batch: int = typer.Option(8, min=1, help="most requests the model worker runs in one batch"),
    max_queue: int = typer.Option(64, min=1, help="requests waiting beyond this get 503 (retry later)"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... [default: cuda if available]"),
    max_new_tokens: int = typer.Option(256, min=1, help="answer length limit of the generating modes"),
    threshold: float = typer.Option(0.5, min=0.0, max=0.999, help="default cut on P for the mask (the paper's "
                                                                   "0.5); a request may set its own"),
    min_area: float = typer.Option(0.0, "--min-area", min=0.0, max=0.999,
                                   help="empty masks covering less than this share of the image (0: the paper's "
                                        "rule; choose it on good parts with agvas calibrate)"),
    timeout_header: float = typer.Option(10.0, min=0.01, help="seconds a connection may take to send its request "
                                                              "line and headers; then it is closed"),
    timeout_read: float = typer.Option(30.0, min=0.01, help="seconds a request body may stall before it is "
                                                            "complete; then 408"),
    timeout_keep_alive: int = typer.Option(5, min=1, help="seconds an idle keep-alive connection stays open "
                                                          "(uvicorn's timeout_keep_alive)"),
    limit_concurrency: int = typer.Option(256, min=2, help="at this many open connections or running "
                                                           "requests, new requests get 503 (uvicorn's "
                                                           "limit_concurrency)"),
    max_header_bytes: int = typer.Option(16384, min=1024, help="longest request line + headers (uvicorn's "
                                                                "h11_max_incomplete_event_size); longer: 400"),
    allowed_hosts: list[str] = typer.Option([], "--allowed-hosts", help="accepted Host header, repeatable, "
                                            "e.g. --allowed-hosts agvas.example.org or '*.example.org'; "
                                            "others get 400 (Starlette's TrustedHostMiddleware) [default: any]"),
) -> None:
    """Serve the web page (/) and the HTTP API (/v1/segment, /v1/chat, /healthz, /docs)."""
    from agvas.cli.model import _quiet_transformers
    from agvas.cli.segment import load_segmenter
    from agvas.serve.connections import ConnectionLimits
    from agvas.serve.images import DEFAULT_MAX_PIXELS
    from agvas.serve.server import is_loopback

    err = Console(stderr=True)
    _quiet_transformers()
    segmenter = load_segmenter(checkpoint, device, err)  # exits 2 with the loader's message
    from agvas.infer.decision import Decision

    segmenter.decision = Decision(threshold, min_area)

    import uvicorn

    from agvas.serve.app import create_app

    limits = ConnectionLimits(timeout_header_s=timeout_header, timeout_keep_alive_s=timeout_keep_alive,
                              limit_concurrency=limit_concurrency, max_header_bytes=max_header_bytes)
    app = create_app(segmenter, max_upload_mb=max_upload_mb, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                     max_batch=max_batch, max_queue=max_queue, max_new_tokens=max_new_tokens,
                     timeout_read_s=timeout_read, allowed_hosts=allowed_hosts or None)
    if not is_loopback(host):
        err.print(f"[yellow]warning:[/yellow] binding {host}: the server has no authentication; anyone who can "
                  "reach this address can use it")
        if not allowed_hosts:
            err.print("[yellow]warning:[/yellow] any Host header is accepted; name this server's with "
                      "--allowed-hosts")
    err.print(f"model {segmenter.source} on {segmenter.device}; page http://{host}:{port}/ , API docs "
              f"http://{host}:{port}/docs")
    uvicorn.run(app, host=host, port=port, log_level="info", **limits.uvicorn_options())
