"""Inference: the Segmenter API, its modes and dialogue, rendering and benchmarking.

    from agvas.infer import Segmenter
    seg = Segmenter.from_pretrained("checkpoints/agvas-tiny")
    result = seg.segment("image.png")[0]          # direct mode, fast path
    result.mask, result.anomaly_map, result.score, result.text
"""

import agvas._shadowing  # noqa: F401 - first: says so when a folder named agvas shadows this package
from agvas.infer.chat import ChatSession
from agvas.infer.images import ImageLoadError, expand_paths, load_image
from agvas.infer.loading import DEFAULT_CHECKPOINT, CheckpointNotFoundError, UntrainedModelWarning
from agvas.infer.quantize import QuantizationUnavailableError
from agvas.infer.result import SegmentationResult
from agvas.infer.segmenter import Segmenter
from agvas.modes import MODES

__all__ = [
    "DEFAULT_CHECKPOINT", "MODES", "ChatSession", "CheckpointNotFoundError", "ImageLoadError",
    "QuantizationUnavailableError", "SegmentationResult", "Segmenter", "UntrainedModelWarning", "expand_paths",
    "load_image",
]
