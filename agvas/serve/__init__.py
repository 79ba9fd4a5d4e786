"""`agvas serve`: one process serving the web page and the HTTP API around a single model worker.

    from agvas.serve import create_app
    app = create_app(Segmenter.from_pretrained(...))     # an ASGI app: uvicorn, or BackgroundServer

Only the command line imports this package; it builds on agvas.infer and never the other way round.
"""

from agvas.serve.app import create_app
from agvas.serve.errors import ApiError
from agvas.serve.images import DEFAULT_MAX_PIXELS, UploadError, decode_upload, sniff_format
from agvas.serve.server import BackgroundServer
from agvas.serve.worker import ModelWorker, QueueFull, WorkerUnavailable

__all__ = [
    "DEFAULT_MAX_PIXELS", "ApiError", "BackgroundServer", "ModelWorker", "QueueFull", "UploadError",
    "WorkerUnavailable", "create_app", "decode_upload", "sniff_format",
]
