"""The step from the anomaly map P to a binary mask and a yes/no answer, and its one optional extra rule.

The paper's decision is the default and stays so: mask = P > 0.5, anomalous = the mask is non-empty.
An inspector may want a different operating point — a stricter threshold on P, or "ignore specks
smaller than a few pixels" — so both are options. `min_area` empties masks that cover less than that
share of the image: one stray pixel over the threshold then no longer flags a good part. Choose it on
good images you will not report on (`calibrate_min_area`), never on the evaluation set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decision:
    threshold: float = 0.5
    """Pixels with P above it are anomalous."""
    min_area: float = 0.0
    """A mask covering less than this share of the image is emptied (0: the paper's rule)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 <= self.min_area < 1.0:
            raise ValueError(f"min_area must be a share of the image in [0, 1), got {self.min_area}")

    def mask(self, probability: np.ndarray) -> np.ndarray:
        mask = np.asarray(probability) > self.threshold
        if self.min_area > 0 and mask.mean() < self.min_area:
            mask = np.zeros_like(mask)
        return mask

    def apply(self, result: Any) -> Any:
        """A copy of a `SegmentationResult` whose mask and decision follow this rule (maps unchanged)."""
        mask = self.mask(result.anomaly_map) if result.anchors_found else result.mask
        return dataclasses.replace(result, mask=mask, anomalous=bool(mask.any()), threshold=self.threshold,
                                   min_area=self.min_area)

    def describe(self) -> dict[str, float]:
        return {"threshold": self.threshold, "min_area": self.min_area}


def calibrate_min_area(normal_probabilities: Sequence[np.ndarray], false_alarm: float = 0.2,
                       threshold: float = 0.5) -> float:
    """The smallest `min_area` that flags at most `false_alarm` of these good images.

    The masked share of each good image is sorted; the rule must clear all but the `false_alarm`
    fraction with the largest masks, so it sits just above the largest share it has to clear.
    """
    if not normal_probabilities:
        raise ValueError("calibration needs at least one good image")
    if not 0.0 <= false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in [0, 1), got {false_alarm}")
    areas = np.sort([float((np.asarray(p) > threshold).mean()) for p in normal_probabilities])
    allowed = int(np.floor(false_alarm * len(areas)))
    must_clear = areas[len(areas) - allowed - 1]
    return 0.0 if must_clear == 0.0 else float(np.nextafter(must_clear, 1.0))
