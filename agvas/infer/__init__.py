"""Inference: the Segmenter API, its modes and dialogue, rendering and benchmarking.

    from agvas.infer import Segmenter
    seg = Segmenter.from_pretrained("checkpoints/agvas-tiny")
    result = seg.segment("image.png")[0]          # direct mode, fast path
    result.mask, result.anomaly_map, result.score, result.text

The names below are loaded on first use (PEP 562), as in `agvas.model`: light helpers of this package
(`agvas.infer.isolation`, used by evaluation's runner) can then be imported without torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import agvas._shadowing  # noqa: F401 - first: says so when a folder named agvas shadows this package
from agvas._lazy import lazy_names

if TYPE_CHECKING:
    from agvas.infer.chat import ChatSession
    from agvas.infer.images import ImageLoadError, expand_paths, load_image
    from agvas.infer.loading import DEFAULT_CHECKPOINT, CheckpointNotFoundError, UntrainedModelWarning
    from agvas.infer.quantize import QuantizationUnavailableError
    from agvas.infer.result import SegmentationResult
    from agvas.infer.segmenter import Segmenter
    from agvas.modes import MODES

_WHERE = {
    "ChatSession": "agvas.infer.chat", "ImageLoadError": "agvas.infer.images", "expand_paths": "agvas.infer.images",
    "load_image": "agvas.infer.images", "DEFAULT_CHECKPOINT": "agvas.infer.loading",
    "CheckpointNotFoundError": "agvas.infer.loading", "UntrainedModelWarning": "agvas.infer.loading",
    "QuantizationUnavailableError": "agvas.infer.quantize", "SegmentationResult": "agvas.infer.result",
    "Segmenter": "agvas.infer.segmenter", "MODES": "agvas.modes",
}

__all__ = [
    "DEFAULT_CHECKPOINT", "MODES", "ChatSession", "CheckpointNotFoundError", "ImageLoadError",
    "QuantizationUnavailableError", "SegmentationResult", "Segmenter", "UntrainedModelWarning", "expand_paths",
    "load_image",
]


__getattr__ = lazy_names(__name__, _WHERE)
