"""A mask painted onto its image in one colour: how a person (or an annotating LMM) is shown a mask.

Shared by the annotation requests (`agvas.data.annotate`) and the evaluation gallery
(`agvas.evaluate.report`), which differ only in colour and strength.
"""

from __future__ import annotations

import numpy as np


def overlay_mask(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0),
                 alpha: float = 0.45) -> np.ndarray:
    """The image with the mask blended in colour at weight `alpha`, so both the anomaly and its pixels
    stay visible; uint8 HxWx3 out."""
    out = image.astype(np.float32).copy()
    m = np.asarray(mask) > 0
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(colour, dtype=np.float32)
    return out.round().clip(0, 255).astype(np.uint8)
