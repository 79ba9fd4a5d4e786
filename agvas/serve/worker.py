"""The one thread that runs the model, fed by a queue; callers wait on futures.

Why one thread: the model is neither re-entrant nor cheaper when two requests race for the same cores,
and the HTTP side must stay free to answer health checks and refuse bad uploads while the model works.
Why batches: segment requests that wait together and share a prompt (same mode, instruction and
expectation) go through the model in one `Segmenter.segment` call. Nothing waits on purpose to fill
a batch: while one batch runs, the next one queues up by itself.

A request that breaks the model (any Exception) fails alone: a failed batch is re-run one request at a
time so its neighbours still get answers. Only something that ends the thread (a BaseException such as
SystemExit) marks the worker dead; then every waiting request gets `WorkerUnavailable` and the API
answers 503 until the process is restarted.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agvas.anchors import IMAGE_PLACEHOLDER
from agvas.infer.chat import ChatSession
from agvas.infer.isolation import run_isolated
from agvas.infer.result import SegmentationResult
from agvas.serve.schemas import ChatOptions, SegmentOptions

_STOP = object()
log = logging.getLogger(__name__)


class WorkerUnavailable(RuntimeError):
    """The model worker is not running (not started, stopped, or died): the API answers 503."""


class QueueFull(RuntimeError):
    """More requests wait than the server accepts: the API answers 503 with Retry-After."""


@dataclass(eq=False)
class Job:
    image: np.ndarray
    options: SegmentOptions | ChatOptions
    future: Future = field(default_factory=Future)

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys share one model call; every chat turn is alone."""
        if isinstance(self.options, ChatOptions):
            return ("chat", id(self))
        o = self.options
        return ("segment", o.mode, o.instruction, o.expectation)


def chat_history(history: Sequence[Any]) -> list[dict[str, str]]:
    """The client's plain history in ChatSession's form: the first user turn carries the image."""
    messages = [{"role": m.role, "content": m.content} for m in history]
    if messages:
        messages[0]["content"] = f"{IMAGE_PLACEHOLDER}\n{messages[0]['content']}"
    return messages


class ModelWorker:
    """`submit(image, options) -> Future[SegmentationResult]`, processed by one daemon thread."""

    def __init__(self, segmenter: Any, max_batch: int = 8, max_queue: int = 64, max_new_tokens: int = 256) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch} and {max_queue}")
        self.segmenter = segmenter
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_new_tokens = max_new_tokens
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stop_seen = False
        self.death: str | None = None
        self.batches = 0
        self.processed = 0

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the worker was already started")
        self._thread = threading.Thread(target=self._run, name="agvas-model-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Refuse new requests, finish those already queued (within `timeout`), fail any left, end the thread."""
        self._stopping = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._fail_queued("the server is shutting down")

    @property
    def alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive() and not self._stopping
                and self.death is None)

    @property
    def pending(self) -> int:
        """Requests queued or being processed."""
        with self._lock:
            return self._queue.qsize() + self._in_flight

    # ---- requests ---------------------------------------------------------------------------------
    def submit(self, image: np.ndarray, options: SegmentOptions | ChatOptions) -> Future:
        if not self.alive:
            raise WorkerUnavailable(self.unavailable_reason())
        with self._lock:
            if self._queue.qsize() + self._in_flight >= self.max_queue:
                raise QueueFull(f"{self.max_queue} requests are already waiting; retry in a moment")
            job = Job(image, options)
            self._queue.put(job)
        if self.death is not None:  # it died while we queued: nobody else would release this job
            self._fail_queued(self.unavailable_reason())
        return job.future

    def unavailable_reason(self) -> str:
        if self.death:
            return f"the model worker died ({self.death}); restart the server"
        if self._thread is None:
            return "the model worker has not been started"
        return "the model worker is stopped"

    # ---- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                jobs = self._take_batch()
                if jobs is None:
                    return
                try:
                    self._process(jobs)
                finally:
                    with self._lock:
                        self._in_flight = 0
                if self._stop_seen:
                    return
        except BaseException as err:  # the thread ends: say why, and release everyone waiting
            self.death = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            log.error("the model worker died: %s", self.death, exc_info=True)
            self._fail_queued(self.unavailable_reason())

    def _take_batch(self) -> list[Job] | None:
        """Block for one job, then take whatever else is already waiting, up to max_batch."""
        item = self._queue.get()
        jobs: list[Job] = []
        while True:
            if item is _STOP:  # finish what was taken, then end
                self._stop_seen = True
                return jobs or None
            with self._lock:
                self._in_flight += 1
            if item.future.set_running_or_notify_cancel():  # skip requests whose client gave up
                jobs.append(item)
            else:
                with self._lock:
                    self._in_flight -= 1
            if len(jobs) >= self.max_batch:
                return jobs
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return jobs

    def _process(self, jobs: list[Job]) -> None:
        groups: dict[tuple[Any, ...], list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.batch_key(), []).append(job)
        try:
            for group in groups.values():
                self._run_group(group)
        except BaseException:
            for job in jobs:
                if not job.future.done():
                    self._finish(job, error=WorkerUnavailable("the model worker died while processing this "
                                                              "request; restart the server"))
            raise

    def _run_group(self, group: list[Job]) -> None:
        """One model call for the group; when it fails, each job alone, so everyone else still gets an answer.
        A job is answered as soon as its call succeeds; one that fails even alone gets its error."""

        def run(jobs: Sequence[Job]) -> list[SegmentationResult]:
            results = self._run_model(list(jobs))
            self.batches += 1
            for job, result in zip(jobs, results, strict=True):
                self.processed += 1
                self._finish(job, result=result)
            return results

        for job, outcome in zip(group, run_isolated(run, group), strict=True):
            if isinstance(outcome, Exception):
                self._finish(job, error=outcome)

    def _finish(self, job: Job, result: SegmentationResult | None = None, error: BaseException | None = None) -> None:
        """Leave the in-flight count *before* the caller is woken, so that a client reading /healthz right
        after its answer never sees its own request still pending."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _run_model(self, group: list[Job]) -> list[SegmentationResult]:
        options = group[0].options
        if isinstance(options, ChatOptions):
            session = ChatSession(self.segmenter, group[0].image, max_new_tokens=self.max_new_tokens)
            session.history = chat_history(options.history)
            return [session.ask(options.message)]
        return self.segmenter.segment([job.image for job in group], instruction=options.instruction,
                                      mode=options.mode, expectation=options.expectation, batch_size=len(group),
                                      max_new_tokens=self.max_new_tokens)

    def _fail_queued(self, reason: str) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and not item.future.done():
                item.future.set_exception(WorkerUnavailable(reason))
