"""The trainer's periodic check: direct segmentation of the held-out synthetic categories and of the
real validation sets.

Per held-out family (or real class) the protocol's figures (pixel AP, F1-max, IoU_ano, IoU_nor) are
computed and averaged over categories, exactly as for a benchmark, through inference's direct fast
path — so the figures in log.csv are those `agvas eval` reports for the same images. Real validation
figures are prefixed `val_`: a run that learns to flag every good part shows it here, not at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agvas.data.recipe import DataSection, HeldOutSample, heldout_samples, validation_samples
from agvas.evaluate.metrics import CategoryAccumulator, mean_over_categories
from agvas.infer.segmenter import Segmenter
from agvas.model.agvas import AGVASModel

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
    real = [s for root in cfg.validation for s in validation_samples(root, cfg.validation_images, cfg.image_size)]

    def evaluate(model: AGVASModel, step: int) -> dict[str, float]:
        metrics = evaluate_samples(model, samples)
        if real:
            metrics |= {f"val_{k}": v for k, v in evaluate_samples(model, real).items()}
        return metrics

    return evaluate
