"""Choosing the decision rule on a user's own good parts, and saying what it costs.

A zero-shot model does not know how quiet a given line's good parts are, and with the tiny model the
paper's rule (P > 0.5, any pixel) flags nearly every good part (README, "Real images"). An inspector
usually has a few dozen known-good parts. `calibrate` picks the loosest rule that flags at most the asked
share of them. A rule chosen on some images always looks better on those same images, so it also reports
the rate on good images kept out of the choice (`holdout`) and, when known defective parts are given, the
share of them the rule still finds. Each image is kept as two numbers (`MapStats`), so calibrating on
hundreds of camera-sized images needs no memory for their maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agvas.infer.decision import Decision, min_area_clearing, threshold_clearing

RULES = ("min-area", "threshold")
"""`min-area`: empty masks smaller than a share of the image (cut on P kept at 0.5); `threshold`: raise the
cut on P (no minimum area)."""
PAPER = Decision()


@dataclass(frozen=True)
class MapStats:
    """What either rule needs of one map: its peak, and the share of pixels above the paper's 0.5."""

    peak: float
    area: float

    @classmethod
    def of(cls, probability: np.ndarray) -> MapStats:
        p = np.asarray(probability)
        return cls(float(p.max(initial=0.0)), float((p > PAPER.threshold).mean()) if p.size else 0.0)

    def flagged(self, decision: Decision) -> bool:
        if decision.min_area > 0 and decision.threshold != PAPER.threshold:
            raise ValueError("MapStats keep the area above 0.5 only: a minimum area needs the threshold at 0.5")
        return decision.flags(self.peak, self.area)


@dataclass(frozen=True)
class Rate:
    """Shares (in [0, 1]) of a set of images whose mask is non-empty, under the paper's rule and the chosen one."""

    images: int
    paper: float
    chosen: float

    @classmethod
    def of(cls, stats: Sequence[MapStats], decision: Decision) -> Rate:
        def share(rule: Decision) -> float:
            return float(np.mean([s.flagged(rule) for s in stats]))

        return cls(len(stats), share(PAPER), share(decision))


@dataclass(frozen=True)
class Calibration:
    rule: str
    false_alarm_target: float
    decision: Decision
    calibration: Rate
    holdout: Rate | None
    defective: Rate | None
    """Flagged = found; the miss rate is 1 − the share."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = self.decision.describe()
        return out

    def flags(self) -> str:
        """The command-line flags that apply this rule in `agvas segment`, `eval` and `serve`."""
        return f"--threshold {self.decision.threshold!r} --min-area {self.decision.min_area!r}"


def calibrate(good: Sequence[MapStats], rule: str = "min-area", false_alarm: float = 0.2,
              holdout: Sequence[MapStats] = (), defective: Sequence[MapStats] = ()) -> Calibration:
    """The rule chosen on `good`, judged on `good`, on `holdout` (good images kept out of the choice) and
    on `defective`."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if not good:
        raise ValueError("calibration needs at least one good image")
    if rule == "min-area":
        decision = Decision(min_area=min_area_clearing([s.area for s in good], false_alarm))
    else:
        decision = Decision(threshold=threshold_clearing([s.peak for s in good], false_alarm, PAPER.threshold))
    return Calibration(rule=rule, false_alarm_target=false_alarm, decision=decision,
                       calibration=Rate.of(good, decision),
                       holdout=Rate.of(holdout, decision) if holdout else None,
                       defective=Rate.of(defective, decision) if defective else None)


def split_holdout(items: Sequence[Any], share: float, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """(calibration, holdout): a seeded random `share` of the items kept out, at least one on each side
    when the share is above 0. Both keep the input order."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the held-out share must be in [0, 1), got {share}")
    if share == 0:
        return list(items), []
    if len(items) < 2:
        raise ValueError(f"holding out good images needs at least 2 of them, got {len(items)}")
    n_out = min(len(items) - 1, max(1, round(share * len(items))))
    out = set(np.random.default_rng(seed).permutation(len(items))[:n_out].tolist())
    return [x for i, x in enumerate(items) if i not in out], [x for i, x in enumerate(items) if i in out]
