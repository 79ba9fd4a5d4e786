"""Per-stage wall-clock timing of the inference path, off by default.

The segmenter wraps each stage in `timer("name")`; the default `NullTimer` costs a no-op context
manager, so the hot path carries no measurement overhead unless the benchmark installs a `StageTimer`.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

STAGES: tuple[str, ...] = ("preprocess", "semantic_encoder", "pixel_encoder", "spam", "llm", "agmd", "postprocess")
"""The stages the segmenter reports: together they should account for (nearly) all of a call's time."""


class NullTimer:
    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        yield


class StageTimer(NullTimer):
    """Accumulates seconds per stage; synchronises CUDA at each boundary so GPU work is charged to its stage."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] += time.perf_counter() - start

    def reset(self) -> dict[str, float]:
        """The totals so far (and start again)."""
        out = dict(self.seconds)
        self.seconds = defaultdict(float)
        return out
