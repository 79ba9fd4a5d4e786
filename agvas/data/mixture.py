"""The training mixture: pick a source by rate, then a sample from it (LISA's HybridDataset idea).

The paper trains on four kinds of data at once: general segmentation, Anomaly-Instruct, Anomaly-Seg
(direct segmentation of anomaly images) and VQA. Each index of `MixtureDataset` draws its own random
generator from (seed, epoch, index), so a sample does not depend on the worker that builds it or on
the order of requests, and a resumed run sees exactly the data it would have seen.

Sources are plain objects with `sample(rng) -> dict`; a sample dict is
{"image": uint8 HxWx3, "mask": uint8 HxW {0,1}, "conversation": [...], "has_mask": bool,
"source": str, "anomalous": bool}.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from agvas.anchors import ANCHOR_TOKENS, IMAGE_PLACEHOLDER
from agvas.data.instruct import (
    InstructRecord,
    normal_record,
    read_records,
    record_from_mask,
    record_from_metadata,
)
from agvas.data.meta import Entry, load_meta, load_sample
from agvas.data.templates import render, sample_conversation

SOURCE_NAMES: tuple[str, ...] = ("general", "anomaly-instruct", "anomaly-seg", "vqa")
DEFAULT_RATES: Mapping[str, float] = {"general": 3.0, "anomaly-instruct": 3.0, "anomaly-seg": 3.0, "vqa": 1.0}
"""Relative rates; LISA used 9:3:3:1 over its own four kinds, here the anomaly sources share the bulk."""


class Source(Protocol):
    def sample(self, rng: np.random.Generator) -> dict[str, Any]: ...


def parse_rates(text: str) -> dict[str, float]:
    """"general=3,anomaly-seg=1" -> {"general": 3.0, "anomaly-seg": 1.0} (for configs and flags)."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            rates[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad rate {part!r}; expected name=number, e.g. general=3") from None
    return rates


# ----------------------------------------------------------------------------------------------
# Pools of anomaly images (meta.json datasets or generators)


@dataclass
class PoolItem:
    image: np.ndarray
    mask: np.ndarray
    cls_name: str | None
    anomalous: bool
    img_path: str | None = None
    metadata: Mapping[str, Any] | None = field(default=None)


class MetaPool:
    """The entries of one or more meta.json splits, loaded on demand.

    A training set names its splits because publishers split differently: in the MVTec-AD and VisA
    layouts `train` holds only good images and every anomaly is in `test`, so a real training set
    usually contributes both. `keep_anomalous`, when given, restricts the anomalous entries to those
    paths (e.g. the ones that have an LMM record); normal entries are always kept. `augment`
    (`agvas.data.augment.augment_pair`-like) is applied to every drawn pair, so that real images see
    the crops, flips and lighting a camera would give them.
    """

    def __init__(self, root: str | os.PathLike, split: str | Sequence[str] = "test",
                 classes: Collection[str] | None = None, keep_anomalous: Collection[str] | None = None,
                 augment: Callable[[np.ndarray, np.ndarray, np.random.Generator],
                                   tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.root = Path(root)
        self.splits = (split,) if isinstance(split, str) else tuple(split)
        keep = set(keep_anomalous) if keep_anomalous is not None else None
        entries = [e for sp in self.splits for c, es in load_meta(self.root, sp).items()
                   if classes is None or c in classes for e in es]
        self.anomalous: list[Entry] = [e for e in entries if e.anomalous and (keep is None or e.img_path in keep)]
        self.normal: list[Entry] = [e for e in entries if not e.anomalous]
        self.augment = augment
        if not self.anomalous and not self.normal:
            raise ValueError(f"{self.root}: no usable entries in split(s) {', '.join(self.splits)}")

    def __len__(self) -> int:
        return len(self.anomalous) + len(self.normal)

    def restricted(self, keep_anomalous: Collection[str]) -> MetaPool:
        """A copy whose anomalous entries are only those in `keep_anomalous`."""
        keep = set(keep_anomalous)
        pool = copy.copy(self)
        pool.anomalous = [e for e in self.anomalous if e.img_path in keep]
        if not pool.anomalous and not pool.normal:
            raise ValueError(f"{self.root}: none of the kept paths is an anomalous entry")
        return pool

    def draw(self, rng: np.random.Generator, normal_rate: float | None = None) -> PoolItem:
        """Uniform over all entries, or normal with probability `normal_rate` when both kinds exist."""
        if normal_rate is None or not self.anomalous or not self.normal:
            pool = self.anomalous + self.normal
        else:
            pool = self.normal if rng.random() < normal_rate else self.anomalous
        e = pool[int(rng.integers(len(pool)))]
        s = load_sample(self.root, e)
        image, mask = s.image, s.mask
        if self.augment is not None:
            image, mask = self.augment(image, mask, rng)
        # A crop can cut a small defect out: the pair is then what it shows, a normal image.
        return PoolItem(image, mask, s.cls_name, s.anomalous and bool(mask.any()), e.img_path)


class GeneratorPool:
    """On-the-fly samples from a callable `fn(rng)`.

    The callable may return (image, mask), (image, mask, metadata), a mapping or an object with
    `image`, `mask` and optionally `metadata`/`meta`, `cls_name`, `anomalous`. Whether the sample is
    anomalous comes from `anomalous`, else the metadata's `anomaly`, else whether the mask is non-empty.
    """

    def __init__(self, fn: Callable[[np.random.Generator], Any]) -> None:
        self.fn = fn

    def draw(self, rng: np.random.Generator, normal_rate: float | None = None) -> PoolItem:
        out = self.fn(rng)
        if isinstance(out, tuple):
            image, mask, *rest = out
            meta: Any = rest[0] if rest else None
            cls_name, anomalous = None, None
        else:
            def get(name: str) -> Any:
                return out.get(name) if isinstance(out, Mapping) else getattr(out, name, None)
            image, mask = get("image"), get("mask")
            meta = get("metadata") if get("metadata") is not None else get("meta")
            cls_name, anomalous = get("cls_name"), get("anomalous")
        if image is None or mask is None:
            raise ValueError("generator output needs an image and a mask")
        mask = (np.asarray(mask) > 0).astype(np.uint8)
        if meta is not None and not isinstance(meta, Mapping):
            meta = vars(meta) if hasattr(meta, "__dict__") else None
        if cls_name is None and meta:
            cls_name = meta.get("cls_name") or meta.get("object") or meta.get("family")
        if anomalous is None and meta and meta.get("anomaly") is not None:
            anomalous = meta["anomaly"]
        anomalous = bool(mask.any()) if anomalous is None else bool(anomalous)
        return PoolItem(np.asarray(image), mask, cls_name, anomalous, None, meta)


class Pool(Protocol):
    """Anything that draws a `PoolItem`: a meta.json split, a generator, or a union of pools."""

    def draw(self, rng: np.random.Generator, normal_rate: float | None = None) -> PoolItem: ...


class UnionPool:
    """Draws from one of several pools by weight: e.g. synthetic images beside real training sets.

    `normal_rate` is passed on, so each real set keeps the configured share of good images whatever its
    own balance (VisA ships twice as many good images as defective ones, BSData none).
    """

    def __init__(self, pools: Sequence[Pool], weights: Sequence[float] | None = None) -> None:
        if not pools:
            raise ValueError("a union needs at least one pool")
        weights = [1.0] * len(pools) if weights is None else [float(w) for w in weights]
        if len(weights) != len(pools) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"need one weight >= 0 per pool with a positive sum, got {weights} for {len(pools)}")
        self.pools = list(pools)
        self.probs = np.asarray(weights) / sum(weights)

    def draw(self, rng: np.random.Generator, normal_rate: float | None = None) -> PoolItem:
        return self.pools[int(rng.choice(len(self.pools), p=self.probs))].draw(rng, normal_rate)


def _as_pool(pool: Pool | Callable[[np.random.Generator], Any]) -> Pool:
    """A pool as it is (anything with `draw`), a bare generator function wrapped."""
    return pool if callable(getattr(pool, "draw", None)) else GeneratorPool(pool)  # type: ignore[arg-type]


def _sample_dict(item: PoolItem, conversation: list[dict[str, str]], source: str) -> dict[str, Any]:
    return {"image": item.image, "mask": item.mask, "conversation": conversation, "has_mask": True,
            "source": source, "anomalous": item.anomalous}


class AnomalySegSource:
    """Anomaly-Seg: (image, mask) pairs under direct segmentation instructions, normal images included."""

    def __init__(self, pool: Pool | Callable[[np.random.Generator], Any],
                 anchors: tuple[str, ...] = ANCHOR_TOKENS, normal_rate: float | None = None) -> None:
        self.pool = _as_pool(pool)
        self.anchors = tuple(anchors)
        self.normal_rate = normal_rate

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        item = self.pool.draw(rng, self.normal_rate)
        conv = render("direct", None, rng, self.anchors, item.anomalous, item.cls_name)
        return _sample_dict(item, conv, "anomaly-seg")


class AnomalyInstructSource:
    """Anomaly-Instruct: a record fused with a sampled template (paper Fig. 4b).

    The record is, in order of preference, the LMM record for the image's path (`records`: a mapping
    or the JSONL file `agvas data annotate` writes), the rule writer on the generator's metadata, or
    the rule writer on the mask geometry. Normal images get a record that says there is no anomaly.
    With `records_only`, anomalous images of a meta.json pool are limited to those with a record.
    """

    def __init__(self, pool: Pool | Callable[[np.random.Generator], Any],
                 records: Mapping[str, InstructRecord] | str | os.PathLike | None = None,
                 anchors: tuple[str, ...] = ANCHOR_TOKENS, type_rates: Mapping[str, float] | None = None,
                 normal_rate: float | None = None, records_only: bool = False,
                 texture: bool | None = None) -> None:
        if isinstance(records, str | os.PathLike):
            records = read_records(records)
        self.records: Mapping[str, InstructRecord] = records or {}
        pool = _as_pool(pool)
        if records_only and isinstance(pool, MetaPool):
            pool = pool.restricted(self.records.keys())
        self.pool = pool
        self.anchors = tuple(anchors)
        self.type_rates = type_rates
        self.normal_rate = normal_rate
        self.texture = texture

    def record_for(self, item: PoolItem, rng: np.random.Generator) -> InstructRecord:
        if not item.anomalous:
            return normal_record(item.cls_name, self.texture, seed=rng)
        if item.img_path is not None and item.img_path in self.records:
            return self.records[item.img_path]
        if item.metadata:
            return record_from_metadata(item.metadata, item.cls_name, seed=rng)
        return record_from_mask(item.mask, item.cls_name, item.image, texture=self.texture, seed=rng)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        item = self.pool.draw(rng, self.normal_rate)
        record = self.record_for(item, rng)
        _, conv = sample_conversation(record, rng, self.anchors, item.anomalous, item.cls_name, self.type_rates)
        return _sample_dict(item, conv, "anomaly-instruct")


# ----------------------------------------------------------------------------------------------
# The mixture


def resize_square(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear, mask nearest, both to size x size, so every batch stacks."""
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    if mask.shape != (size, size):
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return image, mask


def _finalise(sample: Mapping[str, Any], source: str, size: int) -> dict[str, Any]:
    """Check a source's output and bring it to the dataset's shape; errors name the source."""
    image = np.asarray(sample.get("image"))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"source {source!r}: image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    raw_mask = sample.get("mask")
    mask = np.zeros(image.shape[:2], np.uint8) if raw_mask is None else (np.asarray(raw_mask) > 0).astype(np.uint8)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"source {source!r}: mask {mask.shape} does not match image {image.shape[:2]}")
    conv = sample.get("conversation")
    if not isinstance(conv, list) or not conv or conv[0].get("role") != "user":
        raise ValueError(f"source {source!r}: conversation must be a list of turns starting with the user")
    if conv[0]["content"].count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(f"source {source!r}: the first user turn must hold {IMAGE_PLACEHOLDER} exactly once")
    image, mask = resize_square(np.ascontiguousarray(image), mask, size)
    # PIL-backed arrays are read-only, and torch warns about (and cannot guard) non-writable tensors.
    image, mask = (a if a.flags.writeable else a.copy() for a in (image, mask))
    return {"image": image, "mask": mask, "conversation": conv, "has_mask": bool(sample.get("has_mask", True)),
            "source": source, "anomalous": bool(sample.get("anomalous", False))}


class MixtureDataset(Dataset):
    """A fixed-length, map-style dataset over several sources, deterministic per (seed, epoch, index)."""

    def __init__(self, sources: Mapping[str, Source], rates: Mapping[str, float] | None = None,
                 length: int = 10_000, seed: int = 0, image_size: int = 256) -> None:
        if not sources:
            raise ValueError("a mixture needs at least one source")
        if rates is None:
            rates = {n: DEFAULT_RATES.get(n, 1.0) for n in sources}
        missing, unknown = sorted(set(sources) - set(rates)), sorted(set(rates) - set(sources))
        if missing or unknown:
            raise ValueError(f"rates and sources must name the same sources: no rate for {missing}, "
                             f"no source for {unknown}")
        if any(r < 0 for r in rates.values()) or sum(rates.values()) <= 0:
            raise ValueError(f"rates must be >= 0 with a positive sum, got {dict(rates)}")
        self.sources = dict(sources)
        self.names = [n for n in self.sources if rates[n] > 0]
        total = sum(rates[n] for n in self.names)
        self.probs = np.array([rates[n] / total for n in self.names])
        self.length, self.seed, self.image_size, self.epoch = length, seed, image_size, 0

    @property
    def rates(self) -> dict[str, float]:
        return dict(zip(self.names, self.probs.tolist(), strict=True))

    def set_epoch(self, epoch: int) -> None:
        """A new epoch draws new samples; call it from the training loop like a DistributedSampler's."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def source_at(self, index: int) -> str:
        """Which source index `index` draws from (the first draw of its generator), without sampling."""
        return self.names[int(self._rng(index).choice(len(self.names), p=self.probs))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mixture of length {self.length}")
        rng = self._rng(index)
        name = self.names[int(rng.choice(len(self.names), p=self.probs))]
        return _finalise(self.sources[name].sample(rng), name, self.image_size)
