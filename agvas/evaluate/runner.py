"""Batched inference over a meta.json dataset and the protocol's metrics, in one process or sharded.

Why it is built this way:

* Every image becomes its own one-image `CategoryAccumulator` (plus a few numbers for the gallery);
  category accumulators are those merged *in the images' listing order*. A single process merges as
  it goes; sharded processes (rank r takes images r, r+W, ...) pickle their per-image pieces to a shard
  file under the output folder, and after a barrier the main process merges all of them in listing
  order. Both rebuild the same accumulator state, so the metrics are bit-identical, not merely close.
* The gallery needs a few binary masks, not all of them: each process keeps only its current best and
  worst images (`GalleryPicker`), with ties broken by listing index, so any sharding picks the same ones.
* A file that cannot be read, or an image the method fails on, is recorded and skipped; the rest is
  still evaluated. A batch that fails is retried image by image so one bad image costs only itself.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agvas.data.meta import Entry, check_inside_root, load_meta, load_sample
from agvas.evaluate.methods import Method, Prediction
from agvas.evaluate.metrics import CategoryAccumulator, mean_over_categories
from agvas.infer.distributed import Distributed
from agvas.infer.isolation import run_isolated
from agvas.io import DataError, atomic_write_bytes

__all__ = [
    "Distributed",
    "EvalResult",
    "EvalSettings",
    "GalleryPicker",
    "ImageOutcome",
    "list_entries",
    "load_item",
    "run_evaluation",
]

SHARD_DIR = ".eval-shards"


@dataclass(frozen=True)
class EvalSettings:
    """The protocol knobs that change the numbers (recorded in metrics.json)."""

    split: str = "test"
    image_size: int | None = None
    """Square side that images (bicubic) and GT masks (nearest) are resized to; None = native size."""
    sigma: float = 0.0
    """Gaussian smoothing of the maps before the threshold-free metrics; the binary mask is not smoothed."""
    batch_size: int = 8
    limit: int | None = None
    """At most this many images per category, evenly spread over its list (quick runs)."""
    gallery_k: int = 4
    max_pixels: int | None = None
    """Images and masks whose header claims more pixels are failures, refused before decoding."""
    allow_outside_root: bool = False
    """Read meta.json paths that are absolute or climb out of the root (refused by default)."""
    threshold: float | None = None
    """The cut on P that makes the masks (None: the method's own, the paper's 0.5)."""
    min_area: float = 0.0
    """AG-VAS only: masks covering less than this share of the image are emptied (`agvas.infer.decision`)."""


@dataclass
class ImageOutcome:
    """One evaluated image: its contribution to the metrics and what the gallery ranks it by."""

    index: int
    cls_name: str
    anomalous: bool
    iou: float
    """IoU with the GT for an anomalous image; 1 if the mask is empty else 0 for a normal one."""
    accumulator: CategoryAccumulator | None


@dataclass
class Failure:
    index: int
    path: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}


class GalleryPicker:
    """Keeps the k best and k worst images by IoU (anomalous images; normal ones as a fallback) and
    only their masks. Keys are (IoU, index), so the choice does not depend on arrival order."""

    def __init__(self, k: int = 4) -> None:
        self.k = k
        self.masks: dict[int, np.ndarray] = {}
        self.pools: dict[bool, dict[str, list[tuple[float, int]]]] = {
            flag: {"best": [], "worst": []} for flag in (True, False)}

    def offer(self, index: int, anomalous: bool, iou: float, mask: np.ndarray) -> None:
        pool = self.pools[anomalous]
        if any(i == index for side in pool.values() for _, i in side):
            return  # already a candidate (absorbing a picker offers its best and its worst)
        pool["best"] = sorted([*pool["best"], (-iou, index)])[: self.k]
        pool["worst"] = sorted([*pool["worst"], (iou, index)])[: self.k]
        keep = self._kept()
        if index in keep:
            self.masks[index] = np.asarray(mask, dtype=bool)
        for i in [i for i in self.masks if i not in keep]:
            del self.masks[i]

    def absorb(self, other: GalleryPicker) -> None:
        """Fold in another process's candidates (a global top-k lies within the union of local ones)."""
        for anomalous, pool in other.pools.items():
            for neg_iou, index in pool["best"]:
                self.offer(index, anomalous, -neg_iou, other.masks[index])
            for iou, index in pool["worst"]:
                self.offer(index, anomalous, iou, other.masks[index])

    def _kept(self) -> set[int]:
        return {i for pool in self.pools.values() for side in pool.values() for _, i in side}

    def selection(self) -> list[tuple[str, int, float]]:
        """(label, index, IoU) rows: best first, then worst not already shown, from the anomalous pool
        (the normal pool only when there are no anomalous images)."""
        pool = self.pools[True] if self.pools[True]["best"] else self.pools[False]
        rows = [("best", i, -v) for v, i in pool["best"]]
        shown = {i for _, i, _ in rows}
        rows += [("worst", i, v) for v, i in pool["worst"] if i not in shown]
        return rows


@dataclass
class EvalResult:
    """What the main process knows once every image has been merged."""

    entries: list[Entry]
    categories: dict[str, dict[str, Any]]
    mean: dict[str, Any]
    failed: list[Failure]
    accumulators: dict[str, CategoryAccumulator]
    gallery: GalleryPicker
    seconds: float
    processes: int
    threshold: float = 0.5
    """The cut of the binary masks (the method's own; the runner never re-thresholds)."""

    @property
    def n_evaluated(self) -> int:
        return int(sum(int(c["n_images"]) for c in self.categories.values()))


# ---------------------------------------------------------------------------------------- data
def list_entries(root: str | os.PathLike, split: str = "test", limit: int | None = None,
                 allow_outside_root: bool = False) -> list[Entry]:
    """The images to evaluate, category by category in meta.json order; the list index is the image's
    identity across processes. `limit` keeps an evenly spaced subset of each category, so a quick run
    still sees normal and anomalous images when a category lists them in blocks. Paths leaving the root
    are a DataError unless `allow_outside_root`."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    meta = load_meta(root, split)
    if not allow_outside_root:
        check_inside_root(root, meta, split)
    out: list[Entry] = []
    for entries in meta.values():
        if limit is not None and len(entries) > limit:
            picks = np.linspace(0, len(entries) - 1, limit).round().astype(int)
            entries = [entries[i] for i in picks]
        out.extend(entries)
    return out


def load_item(root: str | os.PathLike, entry: Entry, image_size: int | None = None,
              max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 HxWx3 image, uint8 HxW {0,1} GT), resized to image_size² if given; files over `max_pixels`
    (from the header) are an ImageTooLargeError.

    Bicubic for the image and nearest for the mask, as the Bayes-PFL protocol resizes them: the GT must
    stay binary, and the metrics are then taken at the fixed size.
    """
    sample = load_sample(root, entry, max_pixels)
    image, gt = sample.image, sample.mask
    if image_size is not None:
        size = (image_size, image_size)
        if image.shape[:2] != size:
            image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BICUBIC))
            gt = np.asarray(Image.fromarray(gt).resize(size[::-1], Image.Resampling.NEAREST))
    return image, gt


def image_iou(mask: np.ndarray, gt: np.ndarray) -> float:
    """The per-image score the protocol averages: IoU for an anomalous image, 'mask empty' for a normal one."""
    g = gt > 0
    if not g.any():
        return 0.0 if mask.any() else 1.0
    return float(np.count_nonzero(mask & g) / np.count_nonzero(mask | g))


# ---------------------------------------------------------------------------------------- inference
def _predict_robust(method: Method, images: list[np.ndarray]) -> list[Prediction | Exception]:
    """Predictions for a batch; when the batch fails, each image alone, so one bad image costs only itself."""

    def predict(batch: Sequence[np.ndarray]) -> list[Prediction]:
        preds = method.predict(list(batch))
        if len(preds) != len(batch):
            raise RuntimeError(f"method returned {len(preds)} predictions for {len(batch)} images")
        return list(preds)

    return run_isolated(predict, images)


def evaluate_indices(method: Method, root: str | os.PathLike, entries: Sequence[Entry], indices: Sequence[int],
                     settings: EvalSettings, failures: list[Failure], picker: GalleryPicker,
                     on_progress: Callable[[int], None] | None = None) -> Iterator[ImageOutcome]:
    """Outcomes of the listed images, in the given order; failures are appended to `failures`."""
    bs = max(1, settings.batch_size)
    for start in range(0, len(indices), bs):
        batch = indices[start:start + bs]
        loaded: list[tuple[int, np.ndarray, np.ndarray]] = []
        for i in batch:
            try:
                image, gt = load_item(root, entries[i], settings.image_size, settings.max_pixels)
            except DataError as err:
                failures.append(Failure(i, entries[i].img_path, str(err)))
                continue
            loaded.append((i, image, gt))
        preds = _predict_robust(method, [im for _, im, _ in loaded]) if loaded else []
        for (i, _, gt), pred in zip(loaded, preds, strict=True):
            try:
                if isinstance(pred, Exception):
                    raise pred
                acc = CategoryAccumulator(threshold=method.threshold, sigma=settings.sigma)
                acc.add(pred.probability, gt, pred.mask, pred.text)
                iou = image_iou(np.asarray(pred.mask, dtype=bool), gt)
            except Exception as err:  # a malformed prediction is that image's failure, not the run's
                failures.append(Failure(i, entries[i].img_path, f"{type(err).__name__}: {err}"))
                continue
            anomalous = bool(gt.any())
            picker.offer(i, anomalous, iou, pred.mask)
            yield ImageOutcome(i, entries[i].cls_name, anomalous, iou, acc)
        if on_progress is not None:
            on_progress(len(batch))


class _Merger:
    """Category accumulators built from per-image ones, which must arrive in listing order."""

    def __init__(self, threshold: float, sigma: float) -> None:
        self.threshold, self.sigma = threshold, sigma
        self.accumulators: dict[str, CategoryAccumulator] = {}
        self.last = -1

    def add(self, outcome: ImageOutcome) -> None:
        if outcome.index <= self.last:
            raise RuntimeError("outcomes must be merged in listing order")
        self.last = outcome.index
        acc = self.accumulators.setdefault(outcome.cls_name,
                                           CategoryAccumulator(threshold=self.threshold, sigma=self.sigma))
        acc.merge(outcome.accumulator)
        outcome.accumulator = None


def _shard_path(out_dir: Path, rank: int, world: int) -> Path:
    return out_dir / SHARD_DIR / f"rank-{rank:03d}-of-{world:03d}.pkl"


def run_evaluation(method: Method, root: str | os.PathLike, settings: EvalSettings, out_dir: str | os.PathLike,
                   dist: Distributed | None = None,
                   on_start: Callable[[int], None] | None = None,
                   on_progress: Callable[[int], None] | None = None) -> EvalResult | None:
    """Evaluate `method` on the dataset at `root`; the main process gets the result, the others None.

    `out_dir` only holds the shard files of a multi-process run (removed once merged). `on_start` is
    told how many images this process will run, `on_progress` how many it has just finished.
    """
    dist = dist or Distributed()
    entries = list_entries(root, settings.split, settings.limit, settings.allow_outside_root)
    mine = list(range(dist.rank, len(entries), dist.world))
    if on_start is not None:
        on_start(len(mine))
    started = time.perf_counter()
    failures: list[Failure] = []
    picker = GalleryPicker(settings.gallery_k)
    outcomes = evaluate_indices(method, root, entries, mine, settings, failures, picker, on_progress)
    merger = _Merger(method.threshold, settings.sigma)

    if dist.world == 1:
        for outcome in outcomes:
            merger.add(outcome)
    else:
        shard = _shard_path(Path(out_dir), dist.rank, dist.world)
        local = list(outcomes)
        atomic_write_bytes(shard, pickle.dumps({"outcomes": local, "failures": failures, "picker": picker},
                                               protocol=pickle.HIGHEST_PROTOCOL))
        del local
        dist.barrier()
        if not dist.is_main:
            return None
        shards = [_load_shard(_shard_path(Path(out_dir), r, dist.world)) for r in range(dist.world)]
        merged = sorted((o for s in shards for o in s["outcomes"]), key=lambda o: o.index)
        for outcome in merged:
            merger.add(outcome)
        failures = [f for s in shards for f in s["failures"]]
        picker = GalleryPicker(settings.gallery_k)
        for s in shards:
            picker.absorb(s["picker"])
        del shards, merged
        _remove_shards(Path(out_dir), dist.world)

    failures.sort(key=lambda f: f.index)
    categories = {c: a.summarise() for c, a in merger.accumulators.items()}
    with warnings.catch_warnings():  # the skipped categories are recorded in the result and the report
        warnings.simplefilter("ignore")
        mean = mean_over_categories(categories)
    return EvalResult(entries, categories, mean, failures, merger.accumulators, picker,
                      time.perf_counter() - started, dist.world, float(method.threshold))


def _load_shard(path: Path) -> dict[str, Any]:
    """A shard this evaluation's own processes wrote a moment ago (never a file from elsewhere)."""
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _remove_shards(out_dir: Path, world: int) -> None:
    for r in range(world):
        _shard_path(out_dir, r, world).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (another run's files) or already gone: leave it
        (out_dir / SHARD_DIR).rmdir()
