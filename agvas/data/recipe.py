"""The data of a training recipe (its `data:` section): the training mixture — synthetic anomalies
(procedural + real textures), instruction records fused with templates, procedural referring
segmentation and VQA — and the held-out split that the trainer's periodic check and evaluation read.

Held-out texture families and defect kinds never reach the training sources; `heldout_samples` draws
only from them, so the periodic evaluation measures zero-shot generalisation, as the paper's protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agvas.data.augment import RealAugment
from agvas.data.camvid import CamVidSource
from agvas.data.general import LisaFolderSource, ShapeReferringSource, ShapeVQASource
from agvas.data.meta import SPLITS, load_meta, load_sample
from agvas.data.mixture import (
    AnomalyInstructSource,
    AnomalySegSource,
    GeneratorPool,
    MetaPool,
    MixtureDataset,
    Pool,
    Source,
    UnionPool,
    resize_square,
)
from agvas.data.sources.registry import ROLES, SourceSpec, build_sources, parse_sources
from agvas.data.synth import (
    DEFAULT_HOLDOUT_DEFECTS,
    DEFAULT_HOLDOUT_FAMILIES,
    DEFECT_KINDS,
    CategorySplit,
    PhotoBank,
    TextureBank,
    family_names,
    generate_sample,
    sample_at,
    split_categories,
)
from agvas.data.synth.textures import PHOTO_PREFIX


@dataclass
class DataSection:
    image_size: int = 256
    rates: dict[str, float] = field(default_factory=lambda: {"general": 2.0, "anomaly-instruct": 3.0,
                                                              "anomaly-seg": 4.0, "vqa": 1.0})
    textures: str | None = None
    """A folder of real texture classes (e.g. DTD) to paste defects on, besides the procedural families."""
    holdout_families: list[str] | None = None
    """None: the synthetic generator's default holdout (never trained on, used for held-out evaluation)."""
    holdout_defects: list[str] | None = None
    normal_fraction: float = 0.3
    anomaly_datasets: list[str | dict[str, Any]] = field(default_factory=list)
    """Real meta.json roots mixed into both anomaly sources beside the synthetic pool. Each is a root
    (all of its splits), or a mapping {root, splits: [train, test], weight: 1.0, classes: [...]}."""
    photos: list[str] = field(default_factory=list)
    """Real meta.json roots whose good images (all splits) are surfaces for synthetic defects (`PhotoBank`):
    real parts, backgrounds and lighting with exact masks, and the same photographs as normals."""
    photo_share: float = 0.5
    """With `photos`: the share of the synthetic pool drawn on them rather than on textures."""
    real_share: float = 0.5
    """With real sets given: the chance that an anomaly sample comes from them rather than the generator."""
    real_normal_rate: float | None = 0.5
    """The share of good images drawn from a real set that has both kinds (None: as the set has them)."""
    augment_real: bool = True
    """Crops, flips, quarter turns and lighting on real pairs (`agvas.data.augment`)."""
    glare: float = 0.0
    """The chance that a training image (synthetic, photo or augmented real, good or defective) gets
    specular highlights, a nuisance that must not read as a defect (`agvas.data.synth.realism`)."""
    exposure: float = 0.0
    """The chance that a training image gets a dark or flat exposure (likewise never a defect)."""
    camvid: str | None = None
    """A CamVid root: real-scene referring segmentation ("segment the road") in the general source."""
    camvid_share: float = 0.5
    """With `camvid`: its share of the general source (the rest stays procedural shapes)."""
    validation: list[str] = field(default_factory=list)
    """Real meta.json roots never trained on, evaluated (all splits) with the held-out check as `val_*`."""
    validation_images: int = 160
    records: str | None = None
    """A JSONL of LMM-written Anomaly-Instruct records (`agvas data annotate`); rule-based records otherwise."""
    lisa_folders: list[str] = field(default_factory=list)
    """LISA-style referring-segmentation folders for the general source (replacing the procedural one)."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Readers of the paper's training sources (`agvas.data.sources.registry.KINDS`), each {kind, root,
    weight, ...}: anomaly kinds join the real pool beside `anomaly_datasets` (at `real_share`), general kinds
    the general source, `llava-instruct` the VQA source, `anomaly-instruct` the Anomaly-Instruct source."""
    source_shares: dict[str, float] = field(default_factory=dict)
    """Per mixture source (general, vqa, anomaly-instruct) fed by `sources`: the share of its samples they
    give (default 1: they replace the stand-in; 0.5: half theirs, half the procedural/rule-based one)."""
    eval_images: int = 64
    num_workers: int = 0


def real_augment(cfg: DataSection) -> RealAugment | None:
    return RealAugment(cfg.image_size, glare=cfg.glare, exposure=cfg.exposure) if cfg.augment_real else None


def category_split(cfg: DataSection) -> tuple[CategorySplit, TextureBank | None]:
    bank = TextureBank(cfg.textures) if cfg.textures else None
    families = family_names(bank)
    hf = DEFAULT_HOLDOUT_FAMILIES if cfg.holdout_families is None else tuple(cfg.holdout_families)
    hd = DEFAULT_HOLDOUT_DEFECTS if cfg.holdout_defects is None else tuple(cfg.holdout_defects)
    return split_categories(families, DEFECT_KINDS, hf, hd), bank


class SyntheticTrainPool:
    """On-the-fly synthetic images of the training categories only."""

    def __init__(self, cats: CategorySplit, bank: TextureBank | PhotoBank | None, size: int,
                 normal_fraction: float, glare: float = 0.0, exposure: float = 0.0) -> None:
        self.cats, self.bank, self.size, self.normal_fraction = cats, bank, size, normal_fraction
        self.glare, self.exposure = glare, exposure

    def __call__(self, rng: np.random.Generator) -> Any:
        family, kind = self.cats.draw(rng, "train", self.normal_fraction)
        sample = generate_sample(rng, family, kind, self.size, self.bank, glare=self.glare,
                                 exposure=self.exposure)
        sample.meta["cls_name"] = family.removeprefix(PHOTO_PREFIX)
        return sample


def photo_bank(cfg: DataSection) -> PhotoBank | None:
    """The good images of `data.photos`, one family per class (classes of the same name are pooled)."""
    files: dict[str, list[str]] = {}
    for root in cfg.photos:
        for split in SPLITS:
            for cls, entries in load_meta(root, split).items():
                files.setdefault(cls, []).extend(str(Path(root) / e.img_path) for e in entries if not e.anomalous)
    if cfg.photos and not any(files.values()):
        raise ValueError(f"data.photos: no good images in {', '.join(cfg.photos)}")
    return PhotoBank(files) if files else None


def synthetic_pool(cfg: DataSection, cats: CategorySplit, bank: TextureBank | None) -> Pool:
    """Defects on procedural and DTD surfaces, and, with `data.photos`, on good photographs at
    `photo_share` (every photo class is a training family; the held-out defect kinds stay held out)."""
    def generated(on: CategorySplit, surfaces: TextureBank | PhotoBank | None) -> Pool:
        return GeneratorPool(SyntheticTrainPool(on, surfaces, cfg.image_size, cfg.normal_fraction, cfg.glare,
                                                cfg.exposure))

    pool = generated(cats, bank)
    photos = photo_bank(cfg)
    if photos is None:
        return pool
    if not 0.0 <= cfg.photo_share <= 1.0:
        raise ValueError(f"data.photo_share must be in [0, 1], got {cfg.photo_share}")
    painted = generated(split_categories(photos.families, DEFECT_KINDS, (), cats.holdout_defects), photos)
    return UnionPool([pool, painted], [1.0 - cfg.photo_share, cfg.photo_share])


def real_pools(cfg: DataSection) -> tuple[list[MetaPool], list[float]]:
    """The real training sets of a recipe, each with its splits, classes and weight, and their weights."""
    augment = real_augment(cfg)
    pools, weights = [], []
    for i, spec in enumerate(cfg.anomaly_datasets):
        where = f"data.anomaly_datasets[{i}]"
        if isinstance(spec, str):
            spec = {"root": spec}
        if not isinstance(spec, dict) or "root" not in spec:
            raise ValueError(f"{where}: expected a root or a mapping with 'root', got {spec!r}")
        unknown = sorted(set(spec) - {"root", "splits", "weight", "classes"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: root, splits, weight, classes")
        splits = spec.get("splits", list(SPLITS))
        pools.append(MetaPool(spec["root"], split=[splits] if isinstance(splits, str) else splits,
                              classes=spec.get("classes"), augment=augment))
        weights.append(float(spec.get("weight", 1.0)))
    return pools, weights


def build_training_set(cfg: DataSection, anchors: tuple[str, ...], length: int, seed: int) -> MixtureDataset:
    cats, bank = category_split(cfg)
    pool = synthetic_pool(cfg, cats, bank)
    normal_rate = None
    readers = _readers(cfg, anchors)
    has_real = bool(cfg.anomaly_datasets or readers["anomaly"])
    if has_real:
        reals, weights = real_pools(cfg) if cfg.anomaly_datasets else ([], [])
        reals += [r for _, r in readers["anomaly"]]
        weights += [s.weight for s, _ in readers["anomaly"]]
        if not 0.0 <= cfg.real_share <= 1.0:
            raise ValueError(f"data.real_share must be in [0, 1], got {cfg.real_share}")
        pool = UnionPool([pool, UnionPool(reals, weights)], [1.0 - cfg.real_share, cfg.real_share])
        normal_rate = cfg.real_normal_rate
    general: Source
    if cfg.lisa_folders:
        general = _OneOf([LisaFolderSource(f, anchors) for f in cfg.lisa_folders])
    else:
        general = ShapeReferringSource(cfg.image_size, anchors)
    if cfg.camvid:
        general = _OneOf([general, CamVidSource(cfg.camvid, anchors=anchors)], [1.0 - cfg.camvid_share,
                                                                                cfg.camvid_share])
    # Synthetic-only recipes call every class a texture, as the shipped checkpoint was trained; with real
    # objects (capsules, cookies) the class name decides.
    instruct: Source = AnomalyInstructSource(pool, records=cfg.records, anchors=anchors, normal_rate=normal_rate,
                                             texture=None if has_real or cfg.photos else True)
    vqa: Source = ShapeVQASource(cfg.image_size)
    if cfg.sources:  # the paper's sources, mixed into (or replacing) the stand-ins; nothing changes without
        general = _with_readers(cfg, "general", general, readers["general"])
        vqa = _with_readers(cfg, "vqa", vqa, readers["vqa"])
        instruct = _with_readers(cfg, "anomaly-instruct", instruct, [
            (s, AnomalyInstructSource(r, records=r.records, anchors=anchors, texture=None,
                                      normal_rate=cfg.real_normal_rate))
            for s, r in readers["anomaly-instruct"]])
    sources: dict[str, Source] = {
        "anomaly-seg": AnomalySegSource(pool, anchors, normal_rate=normal_rate),
        "anomaly-instruct": instruct,
        "general": general,
        "vqa": vqa,
    }
    rates = {name: float(cfg.rates.get(name, 0.0)) for name in sources}
    unknown = set(cfg.rates) - set(sources)
    if unknown:
        raise ValueError(f"data.rates names unknown sources {sorted(unknown)}; known: {sorted(sources)}")
    return MixtureDataset({n: s for n, s in sources.items() if rates[n] > 0},
                          {n: r for n, r in rates.items() if r > 0}, length=length, seed=seed,
                          image_size=cfg.image_size)


def _readers(cfg: DataSection, anchors: tuple[str, ...]) -> dict[str, list[tuple[SourceSpec, Any]]]:
    """The recipe's `data.sources` built, by role (all empty without them)."""
    if not cfg.sources:
        return {r: [] for r in ROLES}
    augment = real_augment(cfg)
    return build_sources(parse_sources(cfg.sources), anchors, augment)


def _with_readers(cfg: DataSection, role: str, stand_in: Source, readers: Sequence[tuple[SourceSpec, Any]]) -> Source:
    """`stand_in` alone, the readers alone (share 1), or both at `data.source_shares[role]`."""
    if not readers:
        return stand_in
    share = float(cfg.source_shares.get(role, 1.0))
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"data.source_shares.{role} must be in [0, 1], got {share}")
    ours = _OneOf([r for _, r in readers], [s.weight for s, _ in readers])
    return ours if share >= 1.0 else _OneOf([stand_in, ours], [1.0 - share, share])


class _OneOf:
    """One source chosen per sample, by weight (uniform by default)."""

    def __init__(self, sources: Sequence[Source], weights: Sequence[float] | None = None) -> None:
        self.sources = list(sources)
        w = np.ones(len(self.sources)) if weights is None else np.asarray(weights, dtype=float)
        if len(w) != len(self.sources) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"need one weight >= 0 per source with a positive sum, got {list(w)}")
        self.probs = w / w.sum()

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return self.sources[int(rng.choice(len(self.sources), p=self.probs))].sample(rng)


@dataclass
class HeldOutSample:
    image: np.ndarray
    mask: np.ndarray
    cls_name: str
    anomalous: bool


def validation_samples(root: str, n: int, size: int) -> list[HeldOutSample]:
    """`n` images of a real validation root, evenly spaced over all its splits (good and defective in
    the proportion the set has), at the training size; the same images at every evaluation."""
    entries = [e for sp in SPLITS for es in load_meta(root, sp).values() for e in es]
    if not entries:
        raise ValueError(f"{root}: the validation set has no entries")
    picks = np.unique(np.linspace(0, len(entries) - 1, min(n, len(entries))).round().astype(int))
    out = []
    for i in picks:
        s = load_sample(root, entries[i])
        image, mask = resize_square(s.image, s.mask, size)
        out.append(HeldOutSample(image.copy(), mask.copy(), s.cls_name, s.anomalous))
    return out


def heldout_samples(cfg: DataSection, n: int, seed: int) -> list[HeldOutSample]:
    """The first `n` images of the synthetic test split: held-out families and kinds only."""
    cats, bank = category_split(cfg)
    out = []
    for i in range(n):
        s = sample_at(seed, "test", i, cats, cfg.normal_fraction, cfg.image_size, bank)
        out.append(HeldOutSample(s.image, s.mask, s.meta["family"], bool(s.mask.any())))
    return out
