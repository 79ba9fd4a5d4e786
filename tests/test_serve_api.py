"""`agvas serve`'s HTTP API against real uvicorn servers on loopback ports, with a tiny saved checkpoint."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from model_fixtures import build
from PIL import Image
from typer.testing import CliRunner

from agvas.infer import Segmenter
from agvas.model.config import preset_config
from agvas.serve.app import STATIC_DIR, create_app
from agvas.serve.connections import ConnectionLimits
from agvas.serve.images import sniff_format
from agvas.serve.loadtest import example_png, run_load_test, serve_load_benchmark
from agvas.serve.schemas import SegmentOptions
from agvas.serve.server import BackgroundServer
from agvas.serve.worker import ModelWorker, QueueFull, WorkerUnavailable

MAX_UPLOAD_MB = 0.5
MAX_PIXELS = 300_000


@pytest.fixture(scope="module")
def segmenter(tiny_backbones, tmp_path_factory) -> Segmenter:
    folder = tmp_path_factory.mktemp("serve") / "ckpt"
    build(preset_config("tiny"), tiny_backbones).save_pretrained(folder)
    return Segmenter.from_pretrained(folder, device="cpu")


@contextmanager
def serving(segmenter, **kwargs):
    kwargs = {"max_upload_mb": MAX_UPLOAD_MB, "max_pixels": MAX_PIXELS, "max_new_tokens": 16, **kwargs}
    with BackgroundServer(create_app(segmenter, **kwargs)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def client(segmenter):
    with serving(segmenter) as http:
        yield http


def encoded(size=(48, 64), fmt="PNG", seed=0) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def flat_png(width: int, height: int) -> bytes:
    """A few kB of PNG that decodes to width x height pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def post(client: httpx.Client, data: bytes, options=None, name="upload.png", path="/v1/segment", **kw):
    form = {} if options is None else {"options": options if isinstance(options, str) else json.dumps(options)}
    return client.post(path, files={"image": (name, data, "image/png")}, data=form, **kw)


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header claiming width x height RGB pixels, followed by a few bytes of image data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}, body
    for word in words:
        assert word in body["message"], body["message"]


# ---- the happy paths --------------------------------------------------------------------------------
def test_segment_png_returns_mask_visuals_and_decision(client):
    response = post(client, encoded((48, 64)), {"visuals": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "direct" and body["text"] and (body["width"], body["height"]) == (64, 48)
    assert "[SEG]" in body["raw_text"] and "[" not in body["text"]  # direct answers always hold the anchors
    mask = decode_png(body["mask_png_base64"])
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    assert body["area_fraction"] == pytest.approx((mask > 0).mean(), abs=1e-6)
    assert body["anomalous"] == bool(mask.any()) and 0.0 <= body["score"] <= 1.0
    assert body["text_verdict"] is None and body["text_agrees"] is None  # the fixed answer says nothing
    for key in ("overlay_png_base64", "heat_png_base64"):
        assert decode_png(body[key]).shape == (48, 64, 3)


def test_a_request_sets_its_own_threshold_and_gets_the_map_to_recut(client):
    image = encoded((48, 64), seed=3)
    default = post(client, image, {"visuals": True}).json()
    grey = decode_png(default["map_png_base64"]).astype(int)
    assert grey.shape == (48, 64) and default["threshold"] == 0.5 and default["min_area"] == 0.0
    assert grey.max() == round(255 * default["score"])  # round(255 P); the score is the maximum of P
    low = float(np.quantile(grey, 0.8)) / 255  # a cut that keeps about a fifth of the pixels
    cut = post(client, image, {"threshold": low}).json()
    mask = decode_png(cut["mask_png_base64"]) > 0
    assert cut["threshold"] == low and cut["anomalous"] == bool(mask.any())
    assert cut["text"] == default["text"] and cut["score"] == default["score"]  # the maps are the same
    # P > t on the full-size map, seen through its 8-bit copy: equal away from the quantisation step
    clear = np.abs(grey / 255 - low) > 1 / 255
    assert np.array_equal(mask[clear], (grey / 255 > low)[clear]) and 0.05 < mask.mean() < 0.5
    assert client.get("/v1/info").json()["threshold"] == 0.5


def test_segment_jpeg_json_and_raw_png_mask(client):
    jpeg = encoded((40, 30), fmt="JPEG", seed=1)
    body = post(client, jpeg, name="photo.jpg").json()
    assert (body["width"], body["height"]) == (30, 40) and body["overlay_png_base64"] is None
    raw = post(client, jpeg, name="photo.jpg", params={"format": "png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(raw.content)))
    assert mask.shape == (40, 30)
    assert np.array_equal(mask, decode_png(body["mask_png_base64"]))


def test_generating_mode_and_a_two_turn_chat(client):
    body = post(client, encoded(), {"mode": "describe-plus", "expectation": "A normal part is smooth."}).json()
    assert body["mode"] == "describe-plus" and isinstance(body["text"], str)
    assert body["text_verdict"] in ("anomalous", "normal", None)
    assert body["text_agrees"] == (None if body["text_verdict"] is None
                                   else (body["text_verdict"] == "anomalous") == body["anomalous"])
    first = post(client, encoded(), {"message": "Is there a defect?"}, path="/v1/chat")
    assert first.status_code == 200, first.text
    history = first.json()["history"]
    assert history[-1]["content"] == first.json()["raw_text"]  # the prompt of the next turn is as generated
    assert [m["role"] for m in history] == ["user", "assistant"] and first.json()["turn"] == 1
    second = post(client, encoded(), {"message": "Segment it.", "history": history}, path="/v1/chat").json()
    assert second["turn"] == 2 and second["history"][:2] == history
    bad = post(client, encoded(), {"message": "Why?", "history": history[1:]}, path="/v1/chat")
    assert_error(bad, 422, "history[0]")


# ---- refusals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "options", "status", "words"), [
    (b"just some text, named like an image\n", None, 415, ["not an image", "content"]),
    (encoded()[:60], None, 422, ["PNG", "corrupt or truncated"]),
    (bomb_png(), None, 413, ["pixels"]),
    (encoded((600, 600)), None, 413, ["image file", "--max-upload-mb"]),  # 1 MB of noise: over the file limit
    (flat_png(800, 600), None, 413, ["800x600", "--max-pixels"]),  # a few kB, but 480,000 pixels
    (encoded(), "{not json", 422, ["not valid JSON"]),
    (encoded(), "[1, 2]", 422, ["JSON object"]),
    (encoded(), {"mode": "bogus"}, 422, ["options.mode"]),
    (encoded(), {"mode": "describe-plus"}, 422, ["expectation"]),
    (encoded(), {"threshold": 1.0}, 422, ["options.threshold", "less than 1"]),
    (encoded(), {"instrucion": "typo"}, 422, ["instrucion"]),
    (encoded(), {"instruction": "<image> again"}, 422, ["reserved"]),
    (encoded(), "[" * 100_000 + "]" * 100_000, 422, ["nested too deeply"]),
], ids=["text-renamed-png", "truncated", "bomb-50000px", "file-too-big", "too-many-pixels", "options-not-json",
        "options-not-object", "unknown-mode", "describe-plus-no-expectation", "threshold-1", "unknown-key",
        "placeholder", "options-nested-100k-deep"])
def test_bad_requests_get_clear_json_errors(client, data, options, status, words):
    assert_error(post(client, data, options), status, *words)


def test_request_bodies_over_the_limit_are_cut_off(client):
    declared = post(client, b"\x89PNG\r\n\x1a\n" + bytes(2 * 2**20))  # Content-Length says 2 MB
    assert_error(declared, 413, "request body", "--max-upload-mb")

    def chunked():  # no Content-Length: counted as it streams
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        for _ in range(40):
            yield bytes(64 * 1024)
        yield b"\r\n--b--\r\n"
    streamed = client.post("/v1/segment", content=chunked(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(streamed, 413, "more than")
    assert_error(client.post("/v1/segment", data={"options": "{}"}), 422, "image")  # no file at all
    assert post(client, encoded()).status_code == 200  # and the worker is fine
    assert client.get("/healthz").json() == {"status": "ok", "queue": 0}


def test_chat_says_that_its_options_are_required(client):
    response = post(client, encoded(), path="/v1/chat")
    assert_error(response, 422, "options", "required 'options' JSON field", '"message"')
    assert "optional" not in response.json()["message"]


# ---- slow clients, connection counts, Host -----------------------------------------------------------
@contextmanager
def raw_connection(url: str):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:  # 60 s: only a guard against hanging
        yield sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_clients_are_timed_out(segmenter):
    limits = ConnectionLimits(timeout_header_s=0.3)
    app = create_app(segmenter, max_upload_mb=MAX_UPLOAD_MB, max_pixels=MAX_PIXELS, timeout_read_s=0.3)
    with BackgroundServer(app, limits=limits) as server:
        with raw_connection(server.url) as sock:  # headers never finished: closed, no request ever started
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert read_all(sock) == b""
        with raw_connection(server.url) as sock:  # a body shorter than its Content-Length, then silence
            sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"--timeout-read" in answer
        assert httpx.get(server.url + "/healthz").status_code == 200


def test_connections_beyond_the_cap_get_503(segmenter):
    app = create_app(segmenter, max_upload_mb=MAX_UPLOAD_MB, max_pixels=MAX_PIXELS)
    with BackgroundServer(app, limits=ConnectionLimits(limit_concurrency=3)) as server:
        with raw_connection(server.url) as one, raw_connection(server.url) as two:
            for sock in (one, two):
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # open, headers unfinished
            connections = server.server.server_state.connections
            deadline = time.monotonic() + 60
            while len(connections) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert httpx.get(server.url + "/healthz").status_code == 503
        while len(connections) > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(server.url + "/healthz").status_code == 200


def test_allowed_hosts_refuse_other_host_headers(segmenter):
    app = create_app(segmenter, max_upload_mb=MAX_UPLOAD_MB, max_pixels=MAX_PIXELS,
                     allowed_hosts=["agvas.example.org"])
    with BackgroundServer(app) as server:
        assert httpx.get(server.url + "/healthz").status_code == 400
        ok = httpx.get(server.url + "/healthz", headers={"Host": "agvas.example.org"})
        assert ok.status_code == 200, ok.text


def test_serve_cli_documents_the_connection_options():
    from agvas.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "400"})
    for flag in ("--timeout-header", "--timeout-read", "--timeout-keep-alive", "--limit-concurrency",
                 "--max-header-bytes", "--allowed-hosts"):
        assert flag in result.output, flag


# ---- the worker -----------------------------------------------------------------------------------------
class ScriptedSegmenter:
    """The real segmenter, held at a gate until the test opens it, and failing on command (through the
    instruction). The gate, not a delay, keeps the model busy: what the tests see meanwhile cannot depend
    on how fast a loaded machine is."""

    def __init__(self, inner: Segmenter, gated: bool = False) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def segment(self, images, **kwargs):
        self.calls.append(len(images))
        self.started.set()
        if kwargs.get("instruction") == "raise":
            raise RuntimeError("scripted model failure")
        if kwargs.get("instruction") == "exit":
            raise SystemExit("scripted worker death")
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.segment(images, **kwargs)


def test_health_is_answered_and_requests_are_batched_while_the_model_works(segmenter):
    busy = ScriptedSegmenter(segmenter, gated=True)
    with serving(busy) as client:
        results: list[int] = []

        def request() -> None:
            results.append(post(client, encoded()).status_code)

        threads = [threading.Thread(target=request)]
        threads[0].start()
        assert busy.started.wait(30)
        threads += [threading.Thread(target=request) for _ in range(4)]
        for t in threads[1:]:
            t.start()
        try:
            deadline = time.monotonic() + 30
            while client.get("/healthz").json()["queue"] < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            # The model is still held at the gate, so these answers did not wait for it.
            health = client.get("/healthz")
            assert health.status_code == 200 and health.json()["queue"] == 5  # one at the model, four waiting
            assert post(client, b"not an image").status_code == 415  # refusals do not queue either
            assert busy.calls == [1] and not results
        finally:
            busy.gate.set()  # also when an assertion failed, so the worker thread is not left waiting
        for t in threads:
            t.join(60)
        assert results == [200] * 5
        assert busy.calls[0] == 1 and max(busy.calls[1:]) > 1, busy.calls  # the waiting ones went together

        failed = post(client, encoded(), {"instruction": "raise"})
        assert_error(failed, 500, "scripted model failure", "keeps running")
        assert post(client, encoded()).status_code == 200


def test_a_dead_worker_means_503_not_hanging_requests(segmenter):
    with serving(ScriptedSegmenter(segmenter)) as client:
        assert_error(post(client, encoded(), {"instruction": "exit"}), 503, "died")
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert_error(post(client, encoded()), 503, "scripted worker death", "restart")


def test_worker_refuses_when_not_started_or_full():
    class Blocking:
        def __init__(self) -> None:
            self.release = threading.Event()

        def segment(self, images, **kwargs):
            self.release.wait(30)
            return [f"result {i}" for i in range(len(images))]

    model = Blocking()
    worker = ModelWorker(model, max_batch=4, max_queue=2)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(WorkerUnavailable, match="not been started"):
        worker.submit(image, SegmentOptions())
    worker.start()
    try:
        futures = [worker.submit(image, SegmentOptions()) for _ in range(2)]
        with pytest.raises(QueueFull):
            worker.submit(image, SegmentOptions())
        model.release.set()
        assert [f.result(30) for f in futures] in (["result 0", "result 1"], ["result 0", "result 0"])
    finally:
        model.release.set()
        worker.stop()
    assert not worker.alive


# ---- schema, page, examples, cli ------------------------------------------------------------------------
def test_openapi_docs_and_page_are_served_without_external_links(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/chat", "/healthz"} <= set(spec["paths"])
    for path in ("/docs", "/"):
        page = client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in STATIC_DIR.glob("*.*"):
        text = asset.read_text()
        assert not re.findall(r"https?://(?!127\.0\.0\.1[:/])", text), asset  # only the curl examples' loopback
        assert client.get(f"/static/{asset.name}").status_code == 200
    assert client.get("/nowhere").json()["error"] == "not_found"


def test_examples_are_small_credited_and_not_trained_on(client):
    from agvas.serve.examples import SOURCE_SETS

    examples = json.loads((STATIC_DIR / "examples" / "examples.json").read_text())
    assert len(examples) >= 6 and sum("real" in e["title"] for e in examples) >= 2
    total = 0
    for entry in examples:
        path = STATIC_DIR / "examples" / entry["file"]
        total += path.stat().st_size
        assert sniff_format(path.read_bytes()) == "JPEG"
        assert entry["expectation"] and entry["title"] and entry["source"]
        assert client.get(f"/static/examples/{entry['file']}").headers["content-type"] == "image/jpeg"
    assert total < 300_000
    shipped = json.loads((Path(__file__).parents[1] / "checkpoints" / "agvas-tiny" / "training.json").read_text())
    assert shipped["trained_on"] and not any(s in seen for s in SOURCE_SETS for seen in shipped["trained_on"])
    assert all("CC BY 4.0" in e["source"] for e in examples if "real" in e["title"])


def test_cli_refuses_to_start_without_a_checkpoint(tmp_path):
    from agvas.cli import app

    missing = tmp_path / "missing"
    result = CliRunner().invoke(app, ["serve", "--checkpoint", str(missing)], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "does not exist" in result.output and str(missing) in result.output


# ---- load -------------------------------------------------------------------------------------------------
def test_bounded_load_test_8_clients_200_requests(segmenter, tmp_path):
    out = tmp_path / "serve_load.json"
    # The time limit bounds a hang; it is not a speed check (a loaded 2-core machine needs minutes).
    report = serve_load_benchmark(segmenter, clients=8, requests=200, image_size=64, out=out, time_limit_s=300)
    saved = json.loads(Path(out).read_text())
    assert saved["succeeded"] == 200 and saved["failed"] == 0 and saved["not_sent"] == 0, saved["errors"]
    latency = saved["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert report["mean_batch_size"] > 1  # 8 clients at once: the worker batches them
    with pytest.raises(ValueError, match="loopback"):
        run_load_test("http://192.0.2.1:9", example_png(8), requests=1)
