"""What the evaluation runner scores: anything that turns RGB images into (probability map, binary mask).

Why an interface: the rows of one comparison table (checkpoints, inference modes, the training-free
reference) must go through the same loading, resizing, sharding and metric code, or a difference in a
table could come from the plumbing instead of the method. Only this step differs between rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agvas.evaluate.baselines import median_deviation
from agvas.modes import DIRECT_MODE

__all__ = ["METHODS", "AGVASMethod", "MedianDeviationMethod", "Method", "Prediction", "build_method"]

METHODS: tuple[str, ...] = ("agvas", "median-deviation")


@dataclass
class Prediction:
    """One image's answer, at the size of the image it was given."""

    probability: np.ndarray
    """float32 HxW: the map the threshold-free metrics (AP, F1-max, AUROC, AUPRO) rank."""
    mask: np.ndarray
    """bool HxW: the binary answer the IoUs score."""
    text: str | None = None
    """The generated answer, for the text-mask agreement; None when the method writes no text of its own
    (the training-free reference, and `direct` mode, whose answer is a fixed teacher-forced string)."""


class Method(Protocol):
    """A segmenter as the runner sees it."""

    name: str
    threshold: float
    """The cut that made `Prediction.mask` (recorded in metrics.json; the runner never re-thresholds)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the run (method, checkpoint, mode...), for metrics.json and comparisons."""
        ...

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """One prediction per uint8 HxWx3 image, in order; images of one call may differ in size."""
        ...


class MedianDeviationMethod:
    """The training-free reference (`agvas.evaluate.baselines`); its mask is `map > 0.5` like the model's."""

    name = "median-deviation"

    def __init__(self, kernel: int = 31, work_size: int = 256, threshold: float = 0.5) -> None:
        self.kernel = kernel
        self.work_size = work_size
        self.threshold = threshold

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": None, "mode": None, "expectation": None,
                "kernel": self.kernel, "work_size": self.work_size, "threshold": self.threshold}

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        out = []
        for image in images:
            amap, mask = median_deviation(image, kernel=self.kernel, work_size=self.work_size,
                                          threshold=self.threshold)
            out.append(Prediction(amap, mask))
        return out


class AGVASMethod:
    """An AG-VAS checkpoint run in one inference mode through the public `Segmenter` API.

    Going through `Segmenter.segment` (not the model directly) means the numbers describe what a user
    of the API gets, pre- and post-processing included.
    """

    name = "agvas"

    def __init__(self, segmenter: Any, mode: str = "direct", expectation: str | None = None,
                 instruction: str | None = None) -> None:
        from agvas.infer.segmenter import check_mode

        check_mode(mode, expectation)
        self.segmenter = segmenter
        self.mode = mode
        self.expectation = expectation
        self.instruction = instruction
        self.threshold = float(segmenter.decision.threshold)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": self.segmenter.source, "mode": self.mode,
                "expectation": self.expectation, "instruction": self.instruction,
                "variant": self.segmenter.model.config.name, **self.segmenter.decision.describe()}

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        # Arrays straight from PIL are read-only, which torch.from_numpy warns about; a copy is cheap here.
        arrays = [im if im.flags.writeable else im.copy() for im in images]
        results = self.segmenter.segment(arrays, self.instruction, self.mode, self.expectation,
                                         batch_size=max(1, len(arrays)))
        generates = self.mode != DIRECT_MODE
        return [Prediction(np.asarray(r.anomaly_map, dtype=np.float32), np.asarray(r.mask, dtype=bool),
                           r.text if generates else None)
                for r in results]


def build_method(name: str, checkpoint: str | None = None, mode: str = "direct", expectation: str | None = None,
                 instruction: str | None = None, device: Any = None, threshold: float | None = None,
                 min_area: float = 0.0) -> Method:
    """A method by its command-line name; arguments that do not apply to it are an error, not ignored,
    so a table row never claims a checkpoint or mode it did not use. `threshold` None: the method's own
    (0.5, the paper's); `min_area` (AG-VAS only) is `agvas.infer.decision`'s optional rule."""
    if name == "median-deviation":
        if checkpoint is not None:
            raise ValueError("--method median-deviation is training-free: it takes no --checkpoint")
        if mode != "direct" or expectation is not None or instruction is not None or min_area:
            raise ValueError("--method median-deviation has no modes, instruction, expectation or --min-area")
        return MedianDeviationMethod() if threshold is None else MedianDeviationMethod(threshold=threshold)
    if name == "agvas":
        from agvas.infer.decision import Decision
        from agvas.infer.segmenter import Segmenter, check_mode

        check_mode(mode, expectation)  # before the (slow) model load
        segmenter = Segmenter.from_pretrained(checkpoint, device=device)
        segmenter.decision = Decision(segmenter.decision.threshold if threshold is None else threshold, min_area)
        return AGVASMethod(segmenter, mode, expectation, instruction)
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
