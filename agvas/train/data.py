"""The training mixture of a recipe: synthetic anomalies (procedural + real textures), instruction
records fused with templates, procedural referring segmentation and VQA — and the held-out split.

Held-out texture families and defect kinds never reach the training sources; `heldout_samples` draws
only from them, so the periodic evaluation measures zero-shot generalisation, as the paper's protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agvas.data.general import LisaFolderSource, ShapeReferringSource, ShapeVQASource
from agvas.data.mixture import AnomalyInstructSource, AnomalySegSource, GeneratorPool, MetaPool, MixtureDataset
from agvas.data.synth import (
    DEFAULT_HOLDOUT_DEFECTS,
    DEFAULT_HOLDOUT_FAMILIES,
    DEFECT_KINDS,
    CategorySplit,
    TextureBank,
    family_names,
    generate_sample,
    sample_at,
    split_categories,
)
from agvas.train.config import DataSection


def category_split(cfg: DataSection) -> tuple[CategorySplit, TextureBank | None]:
    bank = TextureBank(cfg.textures) if cfg.textures else None
    families = family_names(bank)
    hf = DEFAULT_HOLDOUT_FAMILIES if cfg.holdout_families is None else tuple(cfg.holdout_families)
    hd = DEFAULT_HOLDOUT_DEFECTS if cfg.holdout_defects is None else tuple(cfg.holdout_defects)
    return split_categories(families, DEFECT_KINDS, hf, hd), bank


class SyntheticTrainPool:
    """On-the-fly synthetic images of the training categories only."""

    def __init__(self, cats: CategorySplit, bank: TextureBank | None, size: int, normal_fraction: float) -> None:
        self.cats, self.bank, self.size, self.normal_fraction = cats, bank, size, normal_fraction

    def __call__(self, rng: np.random.Generator) -> Any:
        family, kind = self.cats.draw(rng, "train", self.normal_fraction)
        sample = generate_sample(rng, family, kind, self.size, self.bank)
        sample.meta["cls_name"] = family
        return sample


class UnionPool:
    """Draws from one of several pools, uniformly: synthetic images plus any real training sets."""

    def __init__(self, pools: Sequence[Any]) -> None:
        self.pools = list(pools)

    def draw(self, rng: np.random.Generator, normal_rate: float | None = None):
        return self.pools[int(rng.integers(len(self.pools)))].draw(rng, normal_rate)


def build_training_set(cfg: DataSection, anchors: tuple[str, ...], length: int, seed: int) -> MixtureDataset:
    cats, bank = category_split(cfg)
    pools: list[Any] = [GeneratorPool(SyntheticTrainPool(cats, bank, cfg.image_size, cfg.normal_fraction))]
    pools += [MetaPool(root, split="train") for root in cfg.anomaly_datasets]
    pool = pools[0] if len(pools) == 1 else UnionPool(pools)
    sources: dict[str, Any] = {
        "anomaly-seg": AnomalySegSource(pool, anchors),
        "anomaly-instruct": AnomalyInstructSource(pool, records=cfg.records, anchors=anchors, texture=True),
        "general": (_LisaUnion([LisaFolderSource(f, anchors) for f in cfg.lisa_folders]) if cfg.lisa_folders
                    else ShapeReferringSource(cfg.image_size, anchors)),
        "vqa": ShapeVQASource(cfg.image_size),
    }
    rates = {name: float(cfg.rates.get(name, 0.0)) for name in sources}
    unknown = set(cfg.rates) - set(sources)
    if unknown:
        raise ValueError(f"data.rates names unknown sources {sorted(unknown)}; known: {sorted(sources)}")
    return MixtureDataset({n: s for n, s in sources.items() if rates[n] > 0},
                          {n: r for n, r in rates.items() if r > 0}, length=length, seed=seed,
                          image_size=cfg.image_size)


class _LisaUnion:
    def __init__(self, sources: Sequence[LisaFolderSource]) -> None:
        self.sources = list(sources)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return self.sources[int(rng.integers(len(self.sources)))].sample(rng)


@dataclass
class HeldOutSample:
    image: np.ndarray
    mask: np.ndarray
    cls_name: str
    anomalous: bool


def heldout_samples(cfg: DataSection, n: int, seed: int) -> list[HeldOutSample]:
    """The first `n` images of the synthetic test split: held-out families and kinds only."""
    cats, bank = category_split(cfg)
    out = []
    for i in range(n):
        s = sample_at(seed, "test", i, cats, cfg.normal_fraction, cfg.image_size, bank)
        out.append(HeldOutSample(s.image, s.mask, s.meta["family"], bool(s.mask.any())))
    return out
