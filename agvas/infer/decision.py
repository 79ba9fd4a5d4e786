"""The step from the anomaly map P to a binary mask and a yes/no answer, and its one optional extra rule.

The paper's decision is the default and stays so: mask = P > 0.5, anomalous = the mask is non-empty.
An inspector may want a different operating point — a stricter threshold on P, or "ignore specks
smaller than a few pixels" — so both are options. `min_area` empties masks that cover less than that
share of the image: one stray pixel over the threshold then no longer flags a good part. Choose it on
good images you will not report on (`calibrate_min_area`, `calibrate_threshold`; `agvas calibrate` does it
on a folder of them), never on the evaluation set.
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

    def flags(self, peak: float, area: float) -> bool:
        """Whether `mask` would be non-empty for a map whose maximum is `peak` and whose share of pixels
        above this threshold is `area`: what a caller that kept only those two numbers per image needs."""
        return peak > self.threshold and not (self.min_area > 0 and area < self.min_area)

    def apply(self, result: Any) -> Any:
        """A copy of a `SegmentationResult` whose mask and decision follow this rule (maps unchanged)."""
        mask = self.mask(result.anomaly_map) if result.anchors_found else result.mask
        return dataclasses.replace(result, mask=mask, anomalous=bool(mask.any()), threshold=self.threshold,
                                   min_area=self.min_area)

    def describe(self) -> dict[str, float]:
        return {"threshold": self.threshold, "min_area": self.min_area}


def _largest_to_clear(values: Sequence[float], false_alarm: float) -> float:
    """Of one value per good image, the largest the rule must still clear: all but the `false_alarm`
    share of the images with the largest values."""
    if not len(values):
        raise ValueError("calibration needs at least one good image")
    if not 0.0 <= false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in [0, 1), got {false_alarm}")
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    allowed = int(np.floor(false_alarm * len(ordered)))
    return float(ordered[len(ordered) - allowed - 1])


def min_area_clearing(areas: Sequence[float], false_alarm: float = 0.2) -> float:
    """The smallest `min_area` that clears all but the `false_alarm` share of good images whose masks
    cover these shares: just above the largest share it has to clear (a mask of exactly `min_area` stays)."""
    must_clear = _largest_to_clear(areas, false_alarm)
    if must_clear >= 1.0:
        raise ValueError("a good image it must clear is masked whole: no minimum area below 1 clears it")
    return 0.0 if must_clear == 0.0 else float(np.nextafter(must_clear, 1.0))


def threshold_clearing(peaks: Sequence[float], false_alarm: float = 0.2, floor: float = 0.5) -> float:
    """The lowest threshold on P, never below `floor` (the paper's 0.5), that clears all but the
    `false_alarm` share of good images whose maps peak at these values: the highest peak it must clear
    (P above the threshold is anomalous, so a peak equal to it is cleared). Calibration therefore only
    ever makes the rule stricter than the paper's."""
    must_clear = _largest_to_clear(peaks, false_alarm)
    if must_clear >= 1.0:
        raise ValueError("a good image it must clear reaches P = 1: no threshold below 1 clears it")
    return max(floor, must_clear)


def calibrate_min_area(normal_probabilities: Sequence[np.ndarray], false_alarm: float = 0.2,
                       threshold: float = 0.5) -> float:
    """The smallest `min_area` that flags at most `false_alarm` of these good images' maps."""
    return min_area_clearing([float((np.asarray(p) > threshold).mean()) for p in normal_probabilities],
                             false_alarm)


def calibrate_threshold(normal_probabilities: Sequence[np.ndarray], false_alarm: float = 0.2,
                        floor: float = 0.5) -> float:
    """The lowest threshold (>= `floor`) that flags at most `false_alarm` of these good images' maps."""
    return threshold_clearing([float(np.max(p)) for p in normal_probabilities], false_alarm, floor)
