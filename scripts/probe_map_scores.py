"""Can a decision read off a checkpoint's anomaly maps tell good images from bad ones? (issue 11)

Two probes that train nothing, run at 256 px as `agvas eval --image-size 256` reads the images:

1. Image scores other than the paper's max of P (top-k means, area above 0.5, the max against the map's
   own median or 99th percentile, the max of a box-blurred map): image AUROC of each, per category.
2. With `--reference-split`, a per-pixel reference from good images of the same parts: half of that
   split's good images give the reference (a high percentile of P at each pixel, optionally widened by a
   max filter), the other half the margin over it that leaves at most 20 % of them flagged; the rule
   (P > 0.5 and P > reference + margin) is then measured on `--split`.

    python scripts/probe_map_scores.py checkpoints/agvas-tiny data/synth-heldout
    python scripts/probe_map_scores.py checkpoints/agvas-tiny data/tire --reference-split train
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter
from sklearn.metrics import average_precision_score, roc_auc_score

from agvas.evaluate.runner import list_entries, load_item
from agvas.infer.segmenter import Segmenter

FALSE_ALARM = 0.2


def maps_of(segmenter: Segmenter, root: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maps N×256×256, ground truths, category names) of one split."""
    entries = list_entries(root, split)
    images, truths = zip(*(load_item(root, e, 256) for e in entries), strict=True)
    maps = np.stack([r.anomaly_map for r in segmenter.segment(list(images))]).astype(np.float32)
    return maps, np.stack(truths).astype(bool), np.array([e.cls_name for e in entries])


def image_scores(maps: np.ndarray) -> dict[str, np.ndarray]:
    flat = np.sort(maps.reshape(len(maps), -1), axis=1)
    return {
        "max (the paper's)": flat[:, -1],
        "top-100 mean": flat[:, -100:].mean(1),
        "top-1000 mean": flat[:, -1000:].mean(1),
        "area above 0.5": (flat > 0.5).mean(1),
        "mean": flat.mean(1),
        "max - median": flat[:, -1] - np.median(flat, 1),
        "max - 99th percentile": flat[:, -1] - np.quantile(flat, 0.99, axis=1),
        "max of 8-px box blur": uniform_filter(maps, size=(1, 8, 8)).reshape(len(maps), -1).max(1),
        "max of 32-px box blur": uniform_filter(maps, size=(1, 32, 32)).reshape(len(maps), -1).max(1),
    }


def per_category_auroc(labels: np.ndarray, scores: np.ndarray, categories: np.ndarray) -> float:
    """Mean over the categories that hold both good and defective images, as `agvas eval` averages."""
    values = [roc_auc_score(labels[categories == c], scores[categories == c]) for c in np.unique(categories)
              if 0 < labels[categories == c].sum() < (categories == c).sum()]
    return 100 * float(np.mean(values))


def reference_rule(good: np.ndarray, maps: np.ndarray, truths: np.ndarray, seed: int = 0) -> None:
    labels = truths.reshape(len(truths), -1).any(1)
    order = np.random.default_rng(seed).permutation(len(good))
    build, choose = good[order[: len(good) // 2]], good[order[len(good) // 2:]]
    for quantile in (1.0, 0.99, 0.95, 0.9):
        for widen in (1, 9, 17):
            reference = maximum_filter(np.quantile(build, quantile, axis=0), size=widen)
            peaks = np.sort((choose - reference).reshape(len(choose), -1).max(1))
            margin = max(float(peaks[int(np.ceil((1 - FALSE_ALARM) * len(peaks))) - 1]), 0.0)
            flagged = ((maps - reference > margin) & (maps > 0.5)).reshape(len(maps), -1).any(1)
            adjusted = maps - reference
            ap = average_precision_score(truths[:, ::4, ::4].ravel(), adjusted[:, ::4, ::4].ravel())
            print(f"reference q={quantile} widen={widen:2d} margin={margin:.3f}: "
                  f"false alarm {100 * flagged[~labels].mean():.0f} %, miss {100 * (~flagged[labels]).mean():.0f} %, "
                  f"pixel AP of P - reference {100 * ap:.2f} (every 4th row and column)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", help="a prepared dataset root (meta.json)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--reference-split", help="the split whose good images build the per-pixel reference")
    args = parser.parse_args()
    segmenter = Segmenter.from_pretrained(args.checkpoint)
    maps, truths, categories = maps_of(segmenter, args.data, args.split)
    labels = truths.reshape(len(truths), -1).any(1)
    for name, scores in image_scores(maps).items():
        print(f"{name:24s} image AUROC {per_category_auroc(labels, scores, categories):.1f}")
    if args.reference_split:
        good, good_truths, _ = maps_of(segmenter, args.data, args.reference_split)
        reference_rule(good[~good_truths.reshape(len(good), -1).any(1)], maps, truths)


if __name__ == "__main__":
    main()
