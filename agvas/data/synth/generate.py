"""Writing a synthetic dataset: images, masks, `synth_meta.jsonl` and (last) `meta.json`.

Every image is a pure function of (seed, split, index): its generator is seeded from that triple,
so a dataset can be written by several processes, or partly re-written, and stays byte-identical.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agvas.data.meta import META_FILE, Entry, load_meta, write_meta
from agvas.data.synth.categories import (
    DEFAULT_HOLDOUT_DEFECTS,
    DEFAULT_HOLDOUT_FAMILIES,
    SPLIT_NAMES,
    CategorySplit,
    split_categories,
)
from agvas.data.synth.defects import DEFECTS
from agvas.data.synth.sample import GOOD, SynthSample, generate_sample
from agvas.data.synth.textures import TextureBank, as_bank, family_names
from agvas.io import atomic_write_bytes, save_mask_png, save_png

SYNTH_META_FILE = "synth_meta.jsonl"
_SPLIT_ID = {"train": 0, "test": 1}


def sample_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for choosing the category and for drawing the pixels of one image."""
    base = [int(seed), _SPLIT_ID[split], int(index)]
    return np.random.default_rng(base + [0]), np.random.default_rng(base + [1])


def sample_at(seed: int, split: str, index: int, cats: CategorySplit, normal_fraction: float = 0.3,
              size: int = 256, textures: TextureBank | None = None, nuisance: float = 1.0,
              glare: float = 0.0, exposure: float = 0.0) -> SynthSample:
    """Image `index` of `split` of the dataset with this seed, without generating any other."""
    pick, draw = sample_rngs(seed, split, index)
    family, defect = cats.draw(pick, split, normal_fraction)
    sample = generate_sample(draw, family, defect, size, textures, nuisance, glare, exposure)
    sample.meta.update(seed=int(seed), split=split, index=int(index))
    return sample


@dataclass
class SynthSummary:
    """What was written: counts per (split, family, kind), the time it took, and the category split."""

    out: Path
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    images: int = 0
    categories: CategorySplit | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Job:
    out: str
    seed: int
    cats: CategorySplit
    normal_fraction: float
    size: int
    textures: str | None
    nuisance: float
    glare: float
    exposure: float


def _write_one(job: _Job, split: str, index: int) -> dict[str, Any]:
    sample = sample_at(job.seed, split, index, job.cats, job.normal_fraction, job.size, as_bank(job.textures),
                       job.nuisance, job.glare, job.exposure)
    family, kind = sample.meta["family"], sample.meta["defect"]
    stem = f"{split}/{family}/{index:06d}_{kind}.png"
    img_path = f"images/{stem}"
    save_png(Path(job.out) / img_path, sample.image)
    mask_path = ""
    if sample.meta["anomaly"]:
        mask_path = f"masks/{stem}"
        save_mask_png(Path(job.out) / mask_path, sample.mask)
    return {"img_path": img_path, "mask_path": mask_path, "cls_name": family, "specie_name": kind,
            **sample.meta}


def _write_chunk(args: tuple[_Job, str, Sequence[int]]) -> list[dict[str, Any]]:
    job, split, indices = args
    return [_write_one(job, split, i) for i in indices]


def _existing(out: Path, keep: Sequence[str]) -> tuple[dict[str, dict[str, list[Entry]]], list[str]]:
    """Entries and metadata lines of the splits this run does not touch, so that writing `--split
    test` next to an earlier `--split train` adds to the dataset instead of replacing it."""
    entries: dict[str, dict[str, list[Entry]]] = {}
    lines: list[str] = []
    if not keep or not (out / META_FILE).is_file():
        return entries, lines
    for split in keep:
        entries[split] = load_meta(out, split)
    path = out / SYNTH_META_FILE
    if path.is_file():
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                 if ln.strip() and json.loads(ln).get("split") in keep]
    return entries, lines


def generate_dataset(out: str | os.PathLike, n: int, seed: int = 0, textures: str | os.PathLike | None = None,
                     size: int = 256, normal_fraction: float = 0.3, families: Sequence[str] | None = None,
                     defects: Sequence[str] | None = None,
                     holdout_families: Sequence[str] = DEFAULT_HOLDOUT_FAMILIES,
                     holdout_defects: Sequence[str] = DEFAULT_HOLDOUT_DEFECTS, split: str = "both",
                     workers: int = 1, nuisance: float = 1.0, glare: float = 0.0, exposure: float = 0.0,
                     progress: Callable[[int], None] | None = None) -> SynthSummary:
    """Write `n` images per requested split under `out` (split: 'train', 'test' or 'both').

    `progress` is called with the number of images just finished (for a progress bar).
    """
    if split not in (*SPLIT_NAMES, "both"):
        raise ValueError(f"split must be train, test or both, got {split!r}")
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= normal_fraction <= 1.0:
        raise ValueError("normal_fraction must be in [0, 1]")
    out = Path(out)
    tex_path = str(Path(textures).resolve()) if textures is not None else None
    bank = as_bank(tex_path)
    known = family_names(bank)
    fams = list(families) if families else known
    kinds = list(defects) if defects else list(DEFECTS)
    bad = [f for f in fams if f not in known] + [d for d in kinds if d not in DEFECTS]
    if bad:
        raise ValueError(f"unknown family/kind: {', '.join(bad)} (families: {', '.join(known)}; "
                         f"kinds: {', '.join(DEFECTS)})")
    cats = split_categories(fams, kinds, holdout_families, holdout_defects)
    splits = list(SPLIT_NAMES) if split == "both" else [split]
    for s in splits:
        if n and not cats.pairs(s) and not cats.normals(s):
            raise ValueError(f"the {s} split has no categories with this holdout")
    job = _Job(str(out), int(seed), cats, float(normal_fraction), int(size), tex_path, float(nuisance),
               float(glare), float(exposure))
    kept, lines = _existing(out, [s for s in SPLIT_NAMES if s not in splits])
    summary = SynthSummary(out, categories=cats)
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    chunk = 16
    tasks = [(job, s, range(i, min(i + chunk, n))) for s in splits for i in range(0, n, chunk)]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for recs in pool.map(_write_chunk, tasks):
                records.extend(recs)
                if progress:
                    progress(len(recs))
    else:
        for task in tasks:
            for i in task[2]:
                records.append(_write_one(job, task[1], i))
                if progress:
                    progress(1)
    entries: dict[str, dict[str, list[Entry]]] = {s: {} for s in SPLIT_NAMES}
    entries.update(kept)
    for s in splits:
        entries[s] = {}
    for r in records:
        entries[r["split"]].setdefault(r["cls_name"], []).append(
            Entry(r["img_path"], r["mask_path"], r["cls_name"], r["specie_name"], int(r["anomaly"])))
        summary.counts[(r["split"], r["cls_name"], r["specie_name"])] += 1
        lines.append(json.dumps(r, sort_keys=True))
    lines.sort(key=lambda ln: (SPLIT_NAMES.index(json.loads(ln)["split"]), json.loads(ln)["index"]))
    atomic_write_bytes(out / SYNTH_META_FILE, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
    write_meta(out, test=entries["test"], train=entries["train"])  # last: its presence means complete
    summary.images = len(records)
    summary.seconds = time.perf_counter() - start
    return summary


__all__ = ["GOOD", "SYNTH_META_FILE", "SynthSummary", "generate_dataset", "sample_at", "sample_rngs"]
