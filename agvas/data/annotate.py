"""The paper's annotation pipeline: ask an LMM for one five-field record per anomalous sample.

Any OpenAI-compatible chat-completions server works (vLLM, SGLang, llama.cpp, a hosted API). Each
request carries the paper's three visual inputs: the image with the anomalies' bounding boxes, the
image with the ground-truth mask overlaid, and a normal image of the same class. Results go to a
JSONL file one line at a time, each line written with a single write and fsync'ed, so that a run
killed at any moment can be restarted and neither loses nor duplicates a sample.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw

from agvas.data.instruct import FIELD_NAMES, InstructRecord, RecordError, region_boxes
from agvas.data.meta import Entry, load_meta, load_sample
from agvas.data.overlay import overlay_mask
from agvas.io import DataError

ENV_URL = "AGVAS_ANNOTATE_URL"
ENV_MODEL = "AGVAS_ANNOTATE_MODEL"
DEFAULT_KEY_ENV = "AGVAS_ANNOTATE_API_KEY"

SYSTEM_PROMPT = f"""You are an expert visual inspector for industrial products, textures and medical images.
You annotate anomalies for a segmentation dataset. For each request you receive:
1. the raw image with red bounding boxes around the anomalous regions,
2. the raw image with the ground-truth anomaly mask overlaid in semi-transparent red,
3. a normal (defect-free) reference image of the same category, when one is available.
Use images 1 and 2 only to locate the anomaly; describe what is visible in the raw pixels, and never
mention boxes, masks, overlays or reference images in your text.

Reply with one JSON object and nothing else, with exactly these five string fields:
- "Expectation": the ideal normal appearance of this object or texture (one or two sentences).
- "Observation": the concrete visual deviations: location in the image (e.g. top-left, center),
  shape, size relative to the object, colour and texture irregularities.
- "Diagnosis": why these deviations break the normal material or structural consistency.
- "Summary": one concise sentence naming the region to segment, with its spatial and appearance
  attributes (what it is, where it is, what it looks like).
- "Explanation": a coherent paragraph that ties expectation, observation and diagnosis together
  and justifies the segmentation.
Keys: {", ".join(FIELD_NAMES)}. No markdown, no extra keys."""

_RETRY_STATUS = frozenset({408, 409, 425, 429})


class ReplyError(ValueError):
    """A reply that is not a usable record (not JSON, wrong shape, missing field); worth a retry."""


class _RetryableHTTP(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _FatalHTTP(Exception):
    """A client error (401, 404, ...) that a retry will not fix."""


@dataclass
class AnnotateConfig:
    """Where to send requests and how hard to try. `timeout` bounds each request, in seconds."""

    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    max_retries: int = 4
    timeout: float = 120.0
    backoff: float = 1.0
    backoff_max: float = 30.0
    temperature: float = 0.2
    max_side: int = 768
    split: str = "test"
    limit: int | None = None


@dataclass(frozen=True)
class Job:
    entry: Entry
    reference: Entry | None


@dataclass
class AnnotateReport:
    total: int = 0
    skipped: int = 0
    written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# ----------------------------------------------------------------------------------------------
# Visual inputs and the request


def draw_boxes(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """The image with one rectangle per connected region of the mask, thick enough to see when scaled."""
    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 200))
    for x0, y0, x1, y1 in region_boxes(mask):
        draw.rectangle([x0 - 1, y0 - 1, x1, y1], outline=colour, width=width)
    return np.asarray(im)


def png_data_url(array: np.ndarray, max_side: int | None = None) -> str:
    """A base64 PNG data URL; large images are shrunk first, since LMMs resize them anyway."""
    im = Image.fromarray(np.ascontiguousarray(array))
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def user_content(cls_name: str, images: list[tuple[str, np.ndarray]], has_reference: bool,
                 max_side: int | None = None) -> list[dict[str, Any]]:
    """The user message: each image preceded by a line saying what it is."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"Category: {cls_name}."}]
    for caption, arr in images:
        parts.append({"type": "text", "text": caption})
        parts.append({"type": "image_url", "image_url": {"url": png_data_url(arr, max_side)}})
    if not has_reference:
        parts.append({"type": "text", "text": "No normal reference image of this category is available; "
                      "infer the normal appearance from the regions outside the anomaly."})
    parts.append({"type": "text", "text": f"Return the JSON object with the fields {', '.join(FIELD_NAMES)}."})
    return parts


def build_body(root: Path, job: Job, cfg: AnnotateConfig) -> dict[str, Any]:
    """The chat-completions request body for one sample (reads the pixels, so run it off the loop)."""
    sample = load_sample(root, job.entry)
    images = [
        ("Image 1: the raw image with bounding boxes around the anomalies.", draw_boxes(sample.image, sample.mask)),
        ("Image 2: the raw image with the anomaly mask overlaid in red.", overlay_mask(sample.image, sample.mask)),
    ]
    if job.reference is not None:
        ref = load_sample(root, job.reference)
        images.append(("Image 3: a normal reference image of the same category.", ref.image))
    return {
        "model": cfg.model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_content(job.entry.cls_name, images, job.reference is not None,
                                                     cfg.max_side)},
        ],
        "temperature": cfg.temperature,
    }


def endpoint(url: str) -> str:
    """POST target for a base URL given with or without `/v1` (or already complete)."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


# ----------------------------------------------------------------------------------------------
# Replies

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def parse_reply(text: str) -> InstructRecord:
    """The record in a reply; tolerates ```json fences and prose around one JSON object."""
    if not isinstance(text, str) or not text.strip():
        raise ReplyError("empty reply")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    last: Exception | None = None
    for cand in candidates:
        try:
            obj = json.loads(cand.strip())
        except json.JSONDecodeError as err:
            last = err
            continue
        try:
            return InstructRecord.from_dict(obj)
        except RecordError as err:
            raise ReplyError(f"invalid record: {err}") from None
    raise ReplyError(f"reply is not JSON ({last}): {text[:120]!r}")


def message_text(response: object) -> str:
    """choices[0].message.content, as a string even when a server returns a list of parts."""
    try:
        content = response["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        raise ReplyError(f"not a chat-completions response: {str(response)[:120]!r}") from None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ReplyError("message content is not text")
    return content


# ----------------------------------------------------------------------------------------------
# The results file


class ResultsFile:
    """Append-only JSONL that survives kills: one write + fsync per line, recovery on open.

    On open, a trailing partial line is truncated away (it can only come from a crash outside this
    writer, or from a disk filling up) and the img_paths already present are returned as `done`.
    An exclusive lock keeps two runs from writing the same file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            self._lock()
            self.done = self._recover()
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the rest still holds
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{self.path}: another annotate run is writing this file") from None

    def _recover(self) -> set[str]:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            os.ftruncate(self._fd, cut)
            os.fsync(self._fd)
        done: set[str] = set()
        for i, line in enumerate(data[:cut].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                done.add(str(json.loads(line)["img_path"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{self.path}:{i}: not a result line; fix or remove it before resuming") from None
        return done

    def append(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # one call for any sane line; the loop only guards against a short write
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.done.add(str(obj["img_path"]))

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Planning and running


def plan_jobs(root: str | os.PathLike, split: str = "test", limit: int | None = None) -> list[Job]:
    """Every anomalous sample (the first `limit` of them, in meta.json order) with a normal reference.

    The reference is a normal image of the same class from this split, else from the other one,
    chosen by a hash of the sample's path: varied across samples, identical across runs.
    """
    entries = load_meta(root, split)
    other = "train" if split == "test" else "test"
    try:
        others = load_meta(root, other)
    except DataError:
        others = {}
    jobs: list[Job] = []
    for cls, es in entries.items():
        normals = [e for e in es if not e.anomalous] or [e for e in others.get(cls, []) if not e.anomalous]
        for e in es:
            if e.anomalous:
                ref = normals[zlib.crc32(e.img_path.encode()) % len(normals)] if normals else None
                jobs.append(Job(e, ref))
    return jobs[:limit] if limit is not None else jobs


def backoff_delay(attempt: int, cfg: AnnotateConfig, retry_after: float | None = None) -> float:
    """Exponential back-off with jitter, never longer than `backoff_max` (Retry-After included)."""
    delay = min(cfg.backoff_max, cfg.backoff * 2.0 ** attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cfg.backoff_max)


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return None


async def _request_once(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                        headers: dict[str, str], timeout: float) -> InstructRecord:
    async with asyncio.timeout(timeout):
        resp = await client.post(url, json=body, headers=headers, timeout=timeout)
    if resp.status_code >= 400:
        msg = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
        if resp.status_code in _RETRY_STATUS or resp.status_code >= 500:
            raise _RetryableHTTP(msg, _retry_after(resp))
        raise _FatalHTTP(msg)
    try:
        payload = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ReplyError(f"response body is not JSON: {resp.text[:120]!r}") from None
    return parse_reply(message_text(payload))


async def annotate_one(client: httpx.AsyncClient, body: dict[str, Any], cfg: AnnotateConfig) -> InstructRecord:
    """One sample, retried on HTTP errors, timeouts and invalid replies; raises after the last try."""
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    url = endpoint(cfg.url)
    last = "no attempt"
    for attempt in range(cfg.max_retries + 1):
        retry_after = None
        try:
            return await _request_once(client, url, body, headers, cfg.timeout)
        except _FatalHTTP as err:
            raise RuntimeError(str(err)) from None
        except _RetryableHTTP as err:
            last, retry_after = str(err), err.retry_after
        except (TimeoutError, httpx.TimeoutException):
            last = f"timed out after {cfg.timeout:g} s"
        except httpx.TransportError as err:
            last = f"{type(err).__name__}: {err}"
        except ReplyError as err:
            last = str(err)
        if attempt < cfg.max_retries:
            await asyncio.sleep(backoff_delay(attempt, cfg, retry_after))
    raise RuntimeError(f"failed after {cfg.max_retries + 1} attempt(s): {last}")


async def annotate_dataset(root: str | os.PathLike, out: str | os.PathLike, cfg: AnnotateConfig,
                           on_progress: Callable[[int, int], None] | None = None) -> AnnotateReport:
    """Annotate every pending anomalous sample of `root` into `out`, `cfg.concurrency` at a time.

    `on_progress(done, total)` is called after each sample settles (written or failed).
    """
    root = Path(root)
    jobs = plan_jobs(root, cfg.split, cfg.limit)
    report = AnnotateReport(total=len(jobs))
    with ResultsFile(out) as results:
        pending = [j for j in jobs if j.entry.img_path not in results.done]
        report.skipped = len(jobs) - len(pending)
        settled = 0
        if on_progress:
            on_progress(0, len(pending))
        sem = asyncio.Semaphore(max(1, cfg.concurrency))
        limits = httpx.Limits(max_connections=max(1, cfg.concurrency), max_keepalive_connections=cfg.concurrency)

        async def work(job: Job, client: httpx.AsyncClient) -> None:
            nonlocal settled
            async with sem:
                try:
                    body = await asyncio.to_thread(build_body, root, job, cfg)
                    record = await annotate_one(client, body, cfg)
                except (RuntimeError, DataError) as err:
                    report.failures.append((job.entry.img_path, str(err)))
                except Exception as err:  # one broken sample must not stop the others
                    report.failures.append((job.entry.img_path, f"{type(err).__name__}: {err}"))
                else:
                    results.append({"img_path": job.entry.img_path, "cls_name": job.entry.cls_name,
                                    "record": record.to_dict(), "model": cfg.model})
                    report.written += 1
                settled += 1
                if on_progress:
                    on_progress(settled, len(pending))

        async with httpx.AsyncClient(limits=limits, timeout=cfg.timeout) as client:
            await asyncio.gather(*(work(j, client) for j in pending))
    return report


def run_annotation(root: str | os.PathLike, out: str | os.PathLike, cfg: AnnotateConfig,
                   progress: bool = True) -> AnnotateReport:
    """Synchronous entry point with a rich progress bar on stderr."""
    if not progress:
        return asyncio.run(annotate_dataset(root, out, cfg))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("annotating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("annotate", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return asyncio.run(annotate_dataset(root, out, cfg, update))
