"""The annotation client against a real HTTP server on 127.0.0.1 (stdlib, one thread per request)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agvas.data.annotate import (
    SYSTEM_PROMPT,
    AnnotateConfig,
    ReplyError,
    annotate_dataset,
    endpoint,
    parse_reply,
    plan_jobs,
)
from agvas.data.instruct import FIELD_NAMES, read_records
from agvas.data.meta import Entry, write_meta
from agvas.io import save_mask_png, save_png

# A reply policy maps (request number, parsed body) -> (status, delay in s, text).
# For status 200 the text is the assistant message; otherwise it is the raw response body.
Policy = Callable[[int, dict], tuple[int, float, str]]


def category_of(body: dict) -> str:
    text = body["messages"][1]["content"][0]["text"]
    return text.removeprefix("Category: ").rstrip(".")


def good_text(body: dict) -> str:
    cls = category_of(body)
    return json.dumps({n: f"{n} of a {cls}." for n in FIELD_NAMES})


def always_good(n: int, body: dict) -> tuple[int, float, str]:
    return 200, 0.0, good_text(body)


class FakeLMM:
    """An OpenAI-compatible chat-completions endpoint whose replies follow a policy."""

    def __init__(self, policy: Policy = always_good) -> None:
        self.policy = policy
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    n = len(owner.bodies)
                    owner.bodies.append(body)
                    owner.headers.append(dict(self.headers))
                    owner.inflight += 1
                    owner.max_inflight = max(owner.max_inflight, owner.inflight)
                try:
                    status, delay, text = owner.policy(n, body)
                    time.sleep(delay)
                    if status == 200:
                        payload = {"id": str(n), "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
                        data = json.dumps(payload).encode()
                    else:
                        data = text.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); that is the point of some tests
                finally:
                    with owner.lock:
                        owner.inflight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeLMM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_dataset(root: Path, classes: dict[str, tuple[int, int]], size: int = 32) -> Path:
    """classes: name -> (anomalous, normal) counts; tiny random PNGs with a square defect."""
    rng = np.random.default_rng(0)
    test: dict[str, list[Entry]] = {}
    for cls, (n_anom, n_norm) in classes.items():
        entries = []
        for i in range(n_anom + n_norm):
            img = f"{cls}/img_{i:03d}.png"
            save_png(root / img, rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            if i < n_anom:
                mask = np.zeros((size, size), np.uint8)
                mask[4 + i % 8:12 + i % 8, 6:14] = 1
                save_mask_png(root / f"{cls}/mask_{i:03d}.png", mask)
                entries.append(Entry(img, f"{cls}/mask_{i:03d}.png", cls, "bad", 1))
            else:
                entries.append(Entry(img, "", cls, "good", 0))
        test[cls] = entries
    write_meta(root, test)
    return root


def config(url: str, **kw: object) -> AnnotateConfig:
    kw = {"model": "fake-lmm", "concurrency": 2, "max_retries": 3, "timeout": 5.0,
          "backoff": 0.01, "backoff_max": 0.05} | kw
    return AnnotateConfig(url=url, **kw)  # type: ignore[arg-type]


def read_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "file must end with a complete line"
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


# ----------------------------------------------------------------------------------------------


def test_parse_reply_tolerates_fences_prose_and_key_case() -> None:
    fields = {n: f"{n} text" for n in FIELD_NAMES}
    assert parse_reply(json.dumps(fields)).summary == "Summary text"
    assert parse_reply("```json\n" + json.dumps(fields) + "\n```").diagnosis == "Diagnosis text"
    assert parse_reply("Here you go:\n" + json.dumps(fields) + "\nHope it helps.").expectation
    lower = {k.lower(): v for k, v in fields.items()}
    assert parse_reply(json.dumps(lower)).explanation == "Explanation text"
    with pytest.raises(ReplyError, match="not JSON"):
        parse_reply("I cannot see any anomaly.")
    with pytest.raises(ReplyError, match="Summary"):
        parse_reply(json.dumps({k: v for k, v in fields.items() if k != "Summary"}))
    with pytest.raises(ReplyError, match="Observation"):
        parse_reply(json.dumps(fields | {"Observation": ["a", "list"]}))


def test_endpoint_accepts_base_urls_with_or_without_v1() -> None:
    assert endpoint("http://h:1") == "http://h:1/v1/chat/completions"
    assert endpoint("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert endpoint("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_good_replies_three_visual_inputs_and_absent_reference(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (3, 1), "tile": (2, 0)})
    out = tmp_path / "records.jsonl"
    with FakeLMM() as lmm:
        report = asyncio.run(annotate_dataset(root, out, config(lmm.url, api_key="sekrit")))
    assert report.ok and report.written == 5 and report.total == 5
    lines = read_lines(out)
    assert sorted(x["img_path"] for x in lines) == sorted(j.entry.img_path for j in plan_jobs(root))
    for line in lines:
        assert set(line) == {"img_path", "cls_name", "record", "model"}
        assert line["model"] == "fake-lmm"
        assert line["record"]["Summary"] == f"Summary of a {line['cls_name']}."
    assert len(read_records(out)) == 5
    assert all(h.get("Authorization") == "Bearer sekrit" for h in lmm.headers)
    for body in lmm.bodies:
        assert body["model"] == "fake-lmm"
        assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        parts = body["messages"][1]["content"]
        images = [decode_png(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
        texts = " ".join(p["text"] for p in parts if p["type"] == "text")
        if category_of(body) == "bottle":
            assert len(images) == 3 and "No normal reference" not in texts
        else:
            assert len(images) == 2 and "No normal reference" in texts
        boxes, overlay = images[0], images[1]
        assert boxes.shape == overlay.shape == (32, 32, 3)
        assert (boxes[..., 0] == 255).sum() > 10  # a red box was drawn


def test_malformed_missing_field_and_500_are_retried(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (1, 1)})
    fields = {n: "x" for n in FIELD_NAMES if n != "Diagnosis"}

    def policy(n: int, body: dict) -> tuple[int, float, str]:
        script = [(200, 0.0, "{not json"), (200, 0.0, json.dumps(fields)), (500, 0.0, "overloaded")]
        if n < len(script):
            return script[n]
        return 200, 0.0, "```json\n" + good_text(body) + "\n```"

    out = tmp_path / "r.jsonl"
    with FakeLMM(policy) as lmm:
        report = asyncio.run(annotate_dataset(root, out, config(lmm.url, max_retries=3)))
    assert report.ok and report.written == 1
    assert len(lmm.bodies) == 4
    assert len(read_lines(out)) == 1


def test_failures_are_reported_while_others_go_on(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (2, 1), "tile": (2, 1)})

    def policy(n: int, body: dict) -> tuple[int, float, str]:
        return (500, 0.0, "boom") if category_of(body) == "tile" else (200, 0.0, good_text(body))

    out = tmp_path / "r.jsonl"
    with FakeLMM(policy) as lmm:
        report = asyncio.run(annotate_dataset(root, out, config(lmm.url, max_retries=2)))
    assert report.written == 2 and len(report.failures) == 2
    assert all(p.startswith("tile/") and "HTTP 500" in why and "3 attempt" in why for p, why in report.failures)
    assert {x["cls_name"] for x in read_lines(out)} == {"bottle"}
    assert len(lmm.bodies) == 2 + 2 * 3


def test_client_errors_are_not_retried(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (1, 0)})
    with FakeLMM(lambda n, b: (401, 0.0, "bad key")) as lmm:
        report = asyncio.run(annotate_dataset(root, tmp_path / "r.jsonl", config(lmm.url)))
    assert len(report.failures) == 1 and "401" in report.failures[0][1]
    assert len(lmm.bodies) == 1


def test_slow_reply_times_out_then_succeeds_on_retry(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (1, 1)})
    slow = 10.0

    def policy(n: int, body: dict) -> tuple[int, float, str]:
        return 200, (slow if n == 0 else 0.0), good_text(body)

    out = tmp_path / "r.jsonl"
    t0 = time.monotonic()
    with FakeLMM(policy) as lmm:
        report = asyncio.run(annotate_dataset(root, out, config(lmm.url, timeout=0.3)))
        # Waiting for the slow reply could not finish before `slow` seconds: no timing margin to be flaky on.
        assert time.monotonic() - t0 < slow
    # The first reply timed out and a retry succeeded (a loaded machine may need one retry more).
    assert report.ok and len(lmm.bodies) >= 2 and len(read_lines(out)) == 1


def test_requests_run_concurrently(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (6, 1)})

    def policy(n: int, body: dict) -> tuple[int, float, str]:
        return 200, 0.3, good_text(body)

    with FakeLMM(policy) as lmm:
        report = asyncio.run(annotate_dataset(root, tmp_path / "r.jsonl", config(lmm.url, concurrency=3)))
    assert report.written == 6
    assert 2 <= lmm.max_inflight <= 3  # overlapping, and never more than the limit


def test_resume_skips_done_samples_and_drops_a_partial_line(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (3, 1)})
    out = tmp_path / "r.jsonl"
    first = plan_jobs(root)[0].entry.img_path
    done = {"img_path": first, "cls_name": "bottle", "record": {n: "x" for n in FIELD_NAMES}, "model": "m"}
    out.write_text(json.dumps(done) + "\n" + '{"img_path": "bottle/img_001.png", "cls_na')
    with FakeLMM() as lmm:
        report = asyncio.run(annotate_dataset(root, out, config(lmm.url)))
    assert report.skipped == 1 and report.written == 2 and len(lmm.bodies) == 2
    paths = [x["img_path"] for x in read_lines(out)]
    assert sorted(paths) == sorted(j.entry.img_path for j in plan_jobs(root))


def test_limit_takes_the_first_samples(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (4, 1)})
    with FakeLMM() as lmm:
        report = asyncio.run(annotate_dataset(root, tmp_path / "r.jsonl", config(lmm.url, limit=2)))
    assert report.total == 2 and len(lmm.bodies) == 2


# ----------------------------------------------------------------------------------------------
# The command line, in a subprocess that is killed mid-run

# The command module is loaded by file so that the subprocess does not import the whole `agvas` CLI
# (the model commands pull in transformers, seconds per start); the command itself is the real one.
_CLI = (
    "import importlib.util, pathlib, typer, agvas\n"
    "path = pathlib.Path(agvas.__file__).parent / 'cli' / 'data_annotate.py'\n"
    "spec = importlib.util.spec_from_file_location('data_annotate_cli', path)\n"
    "data_annotate = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(data_annotate)\n"
    "app = typer.Typer()\n"
    "app.callback()(lambda: None)\n"
    "data_annotate.register(app)\n"
    "app()\n"
)


def run_cli(args: list[str], url: str, **popen: object) -> subprocess.Popen:
    env = os.environ | {"AGVAS_ANNOTATE_URL": url, "AGVAS_ANNOTATE_MODEL": "fake-lmm"}
    return subprocess.Popen([sys.executable, "-c", _CLI, "annotate", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]


def test_cli_killed_mid_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (6, 1), "tile": (4, 1)})
    out = tmp_path / "records.jsonl"
    args = ["--data", str(root), "--out", str(out), "--concurrency", "2", "--no-progress"]
    everything = sorted(j.entry.img_path for j in plan_jobs(root))

    def slow(n: int, body: dict) -> tuple[int, float, str]:
        return 200, 0.25, good_text(body)

    with FakeLMM(slow) as lmm:
        proc = run_cli(args, lmm.url)
        deadline = time.monotonic() + 180  # a bound for a hung child, not a speed check
        while (not out.exists() or out.read_bytes().count(b"\n") < 3) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = read_lines(out)  # every line whole and valid JSON
    assert 3 <= len(first) < len(everything)

    with FakeLMM() as lmm:
        proc = run_cli(args, lmm.url)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr.decode()
        assert len(lmm.bodies) == len(everything) - len(first)
    assert b"already done" in stdout
    final = read_lines(out)
    assert sorted(x["img_path"] for x in final) == everything  # each sample exactly once
    assert final[: len(first)] == first


def test_cli_exit_codes(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", {"bottle": (1, 1)})
    out = tmp_path / "r.jsonl"
    args = ["--data", str(root), "--out", str(out), "--no-progress", "--max-retries", "0"]
    with FakeLMM(lambda n, b: (503, 0.0, "down")) as lmm:
        proc = run_cli(args, lmm.url)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1 and b"failed: bottle/img_000.png" in stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGVAS_ANNOTATE")}
    proc = subprocess.run([sys.executable, "-c", _CLI, "annotate", *args], env=env, capture_output=True)
    assert proc.returncode == 2 and b"--url and --model" in proc.stderr
