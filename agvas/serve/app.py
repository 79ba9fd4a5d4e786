"""The FastAPI app: the web page, the HTTP API and the error format, around one ModelWorker.

Handlers never run the model themselves: they validate the upload (in a thread, off the event loop),
submit it to the worker and await its future, so /healthz and refusals of bad uploads are answered
while the model is busy. Every error is JSON {"error": code, "message": text}.

Chat keeps its history client-side: each /v1/chat request carries the dialogue so far and the
response returns it extended by the new turn (see schemas.ChatOptions). The server holds no sessions.

/docs is a small local page that renders /openapi.json: FastAPI's default Swagger UI loads its
scripts from a CDN, and the server must work offline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

import agvas
from agvas.infer.decision import Decision
from agvas.modes import CHAT_MODE, MODES
from agvas.serve.connections import ReadTimeoutMiddleware
from agvas.serve.errors import ApiError
from agvas.serve.images import DEFAULT_MAX_PIXELS, check_upload_size, decode_upload
from agvas.serve.limits import BodyLimitMiddleware
from agvas.serve.payload import mask_png, result_payload
from agvas.serve.schemas import (
    ChatMessage,
    ChatOptions,
    ChatResponse,
    ErrorBody,
    Health,
    SegmentOptions,
    SegmentResponse,
    ServerInfo,
)
from agvas.serve.worker import ModelWorker, QueueFull, WorkerUnavailable

STATIC_DIR = Path(__file__).resolve().parent / "static"
FORM_SLACK = 2**20
"""Bytes a request may carry beyond the image: the options JSON and the multipart framing."""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "timeout",
               413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error",
               503: "unavailable", 504: "timeout"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "the upload is over --max-upload-mb or --max-pixels"},
    415: {"model": ErrorBody, "description": "the upload's content is not an image format the server reads"},
    422: {"model": ErrorBody, "description": "bad options JSON, a corrupt image, or a request the model rejects"},
    503: {"model": ErrorBody, "description": "the model worker is not running, or its queue is full"},
}
Options = TypeVar("Options", bound=BaseModel)
FORM_HINTS = {
    "/v1/chat": "send multipart/form-data with a file field 'image' and a required 'options' JSON field "
                'such as {"message": "Is there a defect?"}',
}
FORM_HINT = "send multipart/form-data with a file field 'image' and an optional 'options' JSON field"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": ERROR_CODES.get(status, "error"), "message": message}, status_code=status,
                        headers=headers)


def describe_errors(errors: list[Any], prefix: str = "") -> str:
    """pydantic's error list as one readable line: 'options.mode: Input should be ...; ...'."""
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query")]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        where = ".".join([prefix, *loc] if prefix else loc)
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def parse_options(raw: str | None, model: type[Options]) -> Options:
    """The `options` form field (a JSON object as a string) validated as `model`."""
    try:
        data = json.loads(raw) if raw and raw.strip() else {}
    except json.JSONDecodeError as err:
        raise ApiError(422, f"options is not valid JSON ({err}); send a JSON object such as "
                               '{"mode": "describe"}') from None
    except RecursionError:  # json's parser recurses once per level: '[[[[...' 100k deep
        raise ApiError(422, "options is nested too deeply; send a flat JSON object such as "
                            '{"mode": "describe"}') from None
    if not isinstance(data, dict):
        raise ApiError(422, f"options must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ApiError(422, describe_errors(err.errors(), "options")) from None


def create_app(segmenter: Any, *, max_upload_mb: float = 20.0, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_batch: int = 8, max_queue: int = 64, max_new_tokens: int = 256,
               request_timeout_s: float = 300.0, timeout_read_s: float = 30.0,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """An ASGI app serving `segmenter` (anything with Segmenter's segment/chat interface).

    The model worker starts and stops with the app's lifespan (uvicorn, BackgroundServer, or
    `with TestClient(app)`). `timeout_read_s` bounds each wait for the next piece of a request body;
    `allowed_hosts` (Starlette's TrustedHostMiddleware patterns) refuses other Host headers with 400,
    which guards a server bound beyond loopback, or a local one against DNS rebinding.
    """
    if max_upload_mb <= 0 or max_pixels <= 0:
        raise ValueError(f"max_upload_mb and max_pixels must be positive, got {max_upload_mb} and {max_pixels}")
    max_bytes = int(max_upload_mb * 2**20)
    worker = ModelWorker(segmenter, max_batch=max_batch, max_queue=max_queue, max_new_tokens=max_new_tokens)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)

    app = FastAPI(title="AG-VAS", version=agvas.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Zero-shot visual anomaly segmentation: upload an image, get a mask, a score, a "
                              "decision and the model's answer. Errors are JSON {error, message}.")
    app.state.worker = worker
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes + FORM_SLACK,
                       hint=f" (images up to {max_upload_mb:g} MB, --max-upload-mb)")
    app.add_middleware(ReadTimeoutMiddleware, timeout_s=timeout_read_s)
    if allowed_hosts:  # added last, so it runs first: a wrong Host is refused before anything is read
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    _register_error_handlers(app)

    async def read_image(upload: UploadFile) -> Any:
        data = await upload.read()
        check_upload_size(len(data), max_bytes)
        return await run_in_threadpool(decode_upload, data, max_pixels, max_bytes, upload.filename)

    async def run_model(image: Any, options: SegmentOptions | ChatOptions) -> Any:
        future = worker.submit(image, options)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), request_timeout_s)
        except TimeoutError:
            raise ApiError(504, f"no result within {request_timeout_s:g} s; the server is overloaded") from None
        except (WorkerUnavailable, QueueFull):
            raise
        except ValueError as err:
            raise ApiError(422, f"the model cannot process this request: {err}") from None
        except Exception as err:
            raise ApiError(500, f"the model failed on this request ({type(err).__name__}: {err}); "
                                   "the server keeps running") from None

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", headers=PAGE_HEADERS)

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True,
             responses={503: {"model": Health}}, tags=["server"])
    async def healthz() -> Any:
        """Answered by the web server itself, never queued behind the model."""
        if worker.alive:
            return Health(status="ok", queue=worker.pending)
        body = Health(status="unavailable", queue=worker.pending, detail=worker.unavailable_reason())
        return JSONResponse(body.model_dump(), status_code=503)

    @app.get("/v1/info", response_model=ServerInfo, tags=["server"])
    async def info() -> ServerInfo:
        config = getattr(getattr(segmenter, "model", None), "config", None)
        decision = getattr(segmenter, "decision", Decision())
        return ServerInfo(model=str(getattr(config, "name", "unknown")), source=getattr(segmenter, "source", None),
                          device=str(getattr(segmenter, "device", "unknown")),
                          modes=[*MODES, CHAT_MODE],
                          max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch,
                          threshold=decision.threshold, min_area=decision.min_area)

    @app.post("/v1/segment", response_model=SegmentResponse, tags=["model"],
              responses={200: {"content": {"image/png": {}},
                               "description": "JSON, or with ?format=png the mask PNG (0/255) alone"}, **_ERRORS})
    async def segment(
        image: UploadFile = File(..., description="the image (PNG, JPEG, GIF, WEBP, TIFF or BMP; by content)"),
        options: str | None = Form(None, description='JSON: {"mode", "instruction", "expectation", "threshold", '
                                                     '"visuals"}, '
                                                     'e.g. {"mode": "describe"}'),
        output: Literal["json", "png"] = Query("json", alias="format", description="png: the raw mask PNG"),
    ) -> Any:
        """Segment the anomalies of one image."""
        started = time.perf_counter()
        opts = parse_options(options, SegmentOptions)
        array = await read_image(image)
        result = await run_model(array, opts)
        if opts.threshold is not None:  # after the model: requests that differ only here still share a batch
            result = Decision(opts.threshold, getattr(segmenter, "decision", Decision()).min_area).apply(result)
        if output == "png":
            return Response(await run_in_threadpool(mask_png, result.mask), media_type="image/png")
        elapsed = 1000 * (time.perf_counter() - started)
        return await run_in_threadpool(result_payload, result, array, opts.visuals, elapsed)

    @app.post("/v1/chat", response_model=ChatResponse, tags=["model"], responses=_ERRORS)
    async def chat(
        image: UploadFile = File(..., description="the image the dialogue is about (sent with every turn)"),
        options: str = Form(..., description='JSON: {"message", "history", "visuals"}; history is the previous '
                                             "response's history ([] or absent for the first turn)"),
    ) -> Any:
        """One dialogue turn; the answer may carry a mask."""
        started = time.perf_counter()
        opts = parse_options(options, ChatOptions)
        array = await read_image(image)
        result = await run_model(array, opts)
        body = await run_in_threadpool(result_payload, result, array, opts.visuals,
                                       1000 * (time.perf_counter() - started))
        history = [*opts.history, ChatMessage(role="user", content=opts.message),
                   ChatMessage(role="assistant", content=result.text)]
        body.update(history=[m.model_dump() for m in history], turn=len(history) // 2)
        return body

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return error(err.status, err.message)

    @app.exception_handler(WorkerUnavailable)
    async def unavailable(_: Request, err: WorkerUnavailable) -> JSONResponse:
        return error(503, str(err))

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, err: QueueFull) -> JSONResponse:
        return error(503, str(err), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message = describe_errors(list(err.errors()))
        return error(422, f"{message} ({FORM_HINTS.get(request.url.path, FORM_HINT)})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, err: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(err).__name__}: {err})")
