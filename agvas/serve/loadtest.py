"""A bounded load test of a running server: N concurrent clients share a fixed number of requests.

Bounded in every direction: a fixed request count, a wall-clock limit after which no new request
starts, a per-request timeout, and loopback targets only, so it can never become a stray traffic
generator. Latency is per request as a client sees it (upload, queueing, model, response).
`serve_load_benchmark(segmenter)` starts an in-process server around a segmenter and runs the test
against it; `agvas bench --serve-load` reports its numbers.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from agvas.io import atomic_write_json
from agvas.serve.app import create_app
from agvas.serve.server import BackgroundServer, is_loopback


def example_png(size: int = 64, seed: int = 0) -> bytes:
    """A random-texture PNG (the content does not change the cost)."""
    array = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_load_test(base_url: str, image: bytes, clients: int = 8, requests: int = 200,
                  options: dict[str, Any] | None = None, time_limit_s: float = 120.0, timeout_s: float = 60.0,
                  out: str | Path | None = None) -> dict[str, Any]:
    """POST /v1/segment `requests` times from `clients` threads; the report (and `out` JSON) has p50/p95 ms.

    A request fails if it raises or answers anything but 200; requests not started before the time
    limit are counted as `not_sent` (and the run is then not a full pass).
    """
    host = urlsplit(base_url).hostname or ""
    if not is_loopback(host):
        raise ValueError(f"the load test only targets loopback servers, not {host!r}")
    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be >= 1, got {clients} and {requests}")
    form = {"options": json.dumps(options or {"mode": "direct"})}
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    deadline = time.monotonic() + time_limit_s

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= requests or time.monotonic() > deadline:
                return False
            issued += 1
            return True

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout_s) as http:
            while take():
                start = time.perf_counter()
                try:
                    response = http.post("/v1/segment", files={"image": ("load.png", image, "image/png")}, data=form)
                    key = str(response.status_code)
                    if response.status_code != 200 and len(errors) < 10:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as err:
                    key = type(err).__name__
                    if len(errors) < 10:
                        errors.append(f"{key}: {err}")
                elapsed = 1000 * (time.perf_counter() - start)
                with lock:
                    statuses[key] = statuses.get(key, 0) + 1
                    if key == "200":
                        latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"load-client-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_limit_s + timeout_s + 5)
    wall = time.perf_counter() - started
    done = sum(statuses.values())
    report = {
        "url": base_url, "clients": clients, "requests": requests, "completed": done,
        "succeeded": statuses.get("200", 0), "failed": done - statuses.get("200", 0), "not_sent": requests - issued,
        "status_counts": statuses, "errors": errors,
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                       "mean": float(np.mean(latencies)) if latencies else None,
                       "max": max(latencies) if latencies else None},
        "wall_s": wall, "throughput_rps": done / wall if wall > 0 else None,
        "image_bytes": len(image), "options": json.loads(form["options"]), "time_limit_s": time_limit_s,
    }
    if out is not None:
        atomic_write_json(out, report)
    return report


def serve_load_benchmark(segmenter: Any, clients: int = 8, requests: int = 200, image_size: int = 64,
                         max_batch: int = 8, out: str | Path | None = None, time_limit_s: float = 120.0,
                         ) -> dict[str, Any]:
    """Serve `segmenter` on a loopback port in this process, warm it up, run the load test, stop."""
    image = example_png(image_size)
    app = create_app(segmenter, max_batch=max_batch)
    with BackgroundServer(app) as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:  # warm-up: first-call costs are not load
            http.post("/v1/segment", files={"image": ("warm.png", image, "image/png")}).raise_for_status()
        worker = app.state.worker
        batches, processed = worker.batches, worker.processed
        report = run_load_test(server.url, image, clients=clients, requests=requests, time_limit_s=time_limit_s)
        batches, processed = worker.batches - batches, worker.processed - processed
        report["model_calls"] = batches
        report["mean_batch_size"] = processed / batches if batches else None
    report.update(image_size=image_size, max_batch=max_batch)
    if out is not None:
        atomic_write_json(out, report)
    return report
