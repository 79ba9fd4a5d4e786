"""The trainer's periodic check: direct segmentation of the held-out synthetic categories.

Per held-out family the protocol's figures (pixel AP, F1-max, IoU_ano, IoU_nor) are computed and
averaged over families, exactly as for a benchmark, through inference's direct fast path — so the
figures in log.csv are those `agvas eval` reports for the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agvas.evaluate.metrics import CategoryAccumulator, mean_over_categories
from agvas.infer.segmenter import Segmenter
from agvas.model.agvas import AGVASModel
from agvas.train.config import DataSection
from agvas.train.data import HeldOutSample, heldout_samples

REPORTED = ("ap", "f1_max", "iou_ano", "iou_nor")


def evaluate_samples(model: AGVASModel, samples: Sequence[HeldOutSample], batch_size: int = 8) -> dict[str, float]:
    """Runs inference's own direct fast path on the model being trained (borrowed, not frozen or moved)."""
    with Segmenter.borrowing(model) as segmenter:
        results = segmenter.segment([s.image for s in samples], batch_size=batch_size)
    accs: dict[str, CategoryAccumulator] = {}
    for s, r in zip(samples, results, strict=True):
        acc = accs.setdefault(s.cls_name, CategoryAccumulator(threshold=model.config.threshold))
        acc.add(r.anomaly_map, s.mask, r.mask)
    mean = mean_over_categories({c: a.summarise() for c, a in accs.items()})
    return {k: float(mean[k]) for k in REPORTED}


def make_heldout_evaluator(cfg: DataSection, n: int, seed: int) -> Callable[[AGVASModel, int], dict[str, float]]:
    """Samples are drawn once, so every evaluation of a run sees the same images."""
    samples = heldout_samples(cfg, n, seed)

    def evaluate(model: AGVASModel, step: int) -> dict[str, float]:
        return evaluate_samples(model, samples)

    return evaluate
