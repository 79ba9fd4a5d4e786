"""The pre-flight check of a recipe's data (`agvas data check`, and quick before `agvas train`).

A bad file found at hour 5 of a 30-hour run costs the run; found here it costs seconds. For every data
source the recipe names (real roots, readers of the paper's sources, generators, validation sets) it
reports how many samples the index found, loads up to `limit` of them evenly spread (all with
limit=None) and names every bad one with the reason, measures samples/s, and estimates how many epochs
of it the run will see from the mixture's rates. It renders a few conversations of each mixture source
with the anchors in place. A source that yields nothing is a failure (the caller exits non-zero).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agvas.data.meta import SPLITS, Entry, load_meta, load_sample
from agvas.data.sources.base import Problems, Reader
from agvas.data.sources.registry import SourceSpec, parse_sources
from agvas.io import DataError
from agvas.train.config import DataSection, TrainConfig


@dataclass
class Leaf:
    """One data source as the check sees it: how to count it and how to load item i."""

    name: str
    feeds: str
    share: float
    """Expected fraction of all training samples drawn from it (0 for validation sets)."""
    found: int | None = None
    """None: generated on the fly (no files)."""
    load: Callable[[int], Any] | None = None
    describe: Callable[[int], str] = str
    problems: Problems = field(default_factory=Problems)
    error: str | None = None
    checked: int = 0
    seconds: float = 0.0

    @property
    def bad(self) -> int:
        return len(self.problems)

    @property
    def per_second(self) -> float | None:
        return self.checked / self.seconds if self.seconds > 0 and self.checked else None

    def epochs(self, total: int) -> float | None:
        return total * self.share / self.found if self.found else None

    @property
    def failed(self) -> bool:
        """Nothing to draw: the source could not be read, is empty, or every checked item is bad."""
        if self.error is not None:
            return True
        if self.found is None:
            return False
        return self.found == 0 or (self.checked > 0 and self.checked == self.problems.loaded_bad)


def _rates(cfg: DataSection) -> dict[str, float]:
    names = ("general", "anomaly-instruct", "anomaly-seg", "vqa")
    rates = {n: max(float(cfg.rates.get(n, 0.0)), 0.0) for n in names}
    total = sum(rates.values()) or 1.0
    return {n: r / total for n, r in rates.items()}


def _meta_leaf(root: str, splits: Any, classes: Any, feeds: str, share: float, name: str | None = None) -> Leaf:
    leaf = Leaf(name or f"{root}", feeds, share)
    try:
        splits = [splits] if isinstance(splits, str) else list(splits or SPLITS)
        entries: list[Entry] = [e for sp in splits for c, es in load_meta(root, sp).items()
                                if classes is None or c in classes for e in es]
    except (DataError, ValueError) as err:
        leaf.error = str(err)
        return leaf
    leaf.found = len(entries)
    leaf.load = lambda i: load_sample(root, entries[i])
    leaf.describe = lambda i: f"{root}/{entries[i].img_path}"
    return leaf


def _reader_leaf(spec: SourceSpec, share: float, anchors: tuple[str, ...]) -> Leaf:
    feeds = {"anomaly": "anomaly-seg + anomaly-instruct"}.get(spec.role, spec.role)
    leaf = Leaf(f"{spec.name} ({spec.kind})", feeds, share)
    try:
        reader: Reader = spec.build(anchors)
    except (DataError, ValueError, OSError) as err:
        leaf.error = str(err)
        return leaf
    leaf.found = len(reader)
    leaf.problems = reader.problems
    leaf.load = reader.check
    leaf.describe = reader.describe
    return leaf


def _generated(name: str, feeds: str, share: float, fn: Callable[[np.random.Generator], Any]) -> Leaf:
    leaf = Leaf(name, feeds, share)
    leaf.load = lambda i: fn(np.random.default_rng(i))
    return leaf


def plan(cfg: TrainConfig, anchors: tuple[str, ...]) -> list[Leaf]:
    """Every source of the recipe with its expected share of the training samples."""
    from agvas.data.camvid import CamVidSource
    from agvas.data.general import LisaFolderSource, ShapeReferringSource, ShapeVQASource, load_lisa_item
    from agvas.data.recipe import category_split, synthetic_pool

    d = cfg.data
    rates = _rates(d)
    specs = parse_sources(d.sources)
    by_role: dict[str, list[SourceSpec]] = {}
    for s in specs:
        if s.weight > 0:
            by_role.setdefault(s.role, []).append(s)

    def share_of(role: str) -> float:
        return float(d.source_shares.get(role, 1.0)) if by_role.get(role) else 0.0

    leaves: list[Leaf] = []
    # the anomaly pool (Anomaly-Seg, and Anomaly-Instruct unless its readers replace it)
    pool_rate = rates["anomaly-seg"] + rates["anomaly-instruct"] * (1.0 - share_of("anomaly-instruct"))
    reals = [(spec if isinstance(spec, dict) else {"root": spec}) for spec in d.anomaly_datasets]
    real_w = [float(s.get("weight", 1.0)) for s in reals] + [s.weight for s in by_role.get("anomaly", [])]
    real_share = d.real_share if real_w else 0.0
    synth_name = "synthetic anomalies" + (" (+ photos)" if d.photos else "")
    try:
        cats, bank = category_split(d)
        synth = synthetic_pool(d, cats, bank)  # the photo roots are read (and checked) here too
        leaves.append(_generated(synth_name, "anomaly-seg + anomaly-instruct", pool_rate * (1.0 - real_share),
                                 synth.draw))
    except (DataError, ValueError, OSError) as err:
        leaves.append(Leaf(synth_name, "anomaly-seg + anomaly-instruct", 0.0, error=str(err)))
    total_w = sum(real_w) or 1.0
    for spec, w in zip(reals, real_w, strict=False):
        leaves.append(_meta_leaf(str(spec.get("root")), spec.get("splits"), spec.get("classes"),
                                 "anomaly-seg + anomaly-instruct", pool_rate * real_share * w / total_w))
    for s in by_role.get("anomaly", []):
        leaves.append(_reader_leaf(s, pool_rate * real_share * s.weight / total_w, anchors))
    if d.records:
        leaf = Leaf(f"{d.records} (records)", "anomaly-instruct", 0.0)
        try:
            from agvas.data.instruct import read_records
            leaf.found = len(read_records(d.records))
        except (OSError, ValueError) as err:
            leaf.error = str(err)
        leaves.append(leaf)
    # readers of the Anomaly-Instruct source, general and VQA
    for role, stand_rate in (("anomaly-instruct", 0.0), ("general", rates["general"]), ("vqa", rates["vqa"])):
        rate = rates[role]
        group = by_role.get(role, [])
        ours = share_of(role)
        w = sum(s.weight for s in group) or 1.0
        for s in group:
            leaves.append(_reader_leaf(s, rate * ours * s.weight / w, anchors))
        stand = stand_rate * (1.0 - ours)
        if role == "general":
            camvid = d.camvid_share if d.camvid else 0.0
            if d.lisa_folders:
                for folder in d.lisa_folders:
                    leaf = Leaf(folder, "general", stand * (1 - camvid) / len(d.lisa_folders))
                    try:
                        files = LisaFolderSource(folder, anchors).files
                        leaf.found, leaf.load = len(files), (lambda i, f=files: load_lisa_item(f[i]))
                        leaf.describe = lambda i, f=files: str(f[i])
                    except (DataError, OSError) as err:
                        leaf.error = str(err)
                    leaves.append(leaf)
            else:
                shapes = ShapeReferringSource(d.image_size, anchors)
                leaves.append(_generated("procedural shapes (referring)", "general", stand * (1 - camvid),
                                         shapes.sample))
            if d.camvid:
                leaf = Leaf(d.camvid, "general", stand * camvid)
                try:
                    cv = CamVidSource(d.camvid, anchors=anchors)
                    leaf.found, leaf.load = len(cv), cv._load
                    leaf.describe = lambda i, cv=cv: str(cv.pairs[i][1])
                except (DataError, OSError) as err:
                    leaf.error = str(err)
                leaves.append(leaf)
        elif role == "vqa":
            leaves.append(_generated("procedural shapes (VQA)", "vqa", stand, ShapeVQASource(d.image_size).sample))
    for root in d.validation:
        leaves.append(_meta_leaf(root, SPLITS, None, "validation (never trained on)", 0.0))
    return leaves


def run_checks(leaves: list[Leaf], limit: int | None) -> None:
    """Load up to `limit` items of each leaf (evenly spread; generated ones: `limit` draws, at most 8)."""
    for leaf in leaves:
        if leaf.error is not None or leaf.load is None:
            continue
        n = min(limit if limit is not None else 8, 8) if leaf.found is None else leaf.found
        if limit is not None and leaf.found is not None:
            n = min(n, limit)
        picks = (range(n) if leaf.found is None or n >= leaf.found
                 else np.unique(np.linspace(0, leaf.found - 1, n).round().astype(int)).tolist())
        t0 = time.perf_counter()
        for i in picks:
            try:
                leaf.load(int(i))
            except (DataError, ValueError, OSError) as err:
                leaf.problems.add(leaf.describe(int(i)), str(err))
                leaf.problems.loaded_bad += 1
            leaf.checked += 1
        leaf.seconds = time.perf_counter() - t0


def render_conversation(conv: list[dict[str, str]]) -> str:
    return "\n".join(f"    {t['role']}: " + t["content"].replace("\n", "\n      ") for t in conv)


def sample_conversations(cfg: TrainConfig, anchors: tuple[str, ...], per_source: int,
                         ) -> tuple[dict[str, list[str]], str | None]:
    """A few rendered samples of each mixture source, drawn from the very dataset training builds."""
    from agvas.data.recipe import build_training_set

    try:
        ds = build_training_set(cfg.data, anchors, length=max(cfg.steps * cfg.global_batch, 1), seed=cfg.seed)
    except (DataError, ValueError, OSError) as err:
        return {}, f"the mixture cannot be built: {err}"
    out: dict[str, list[str]] = {n: [] for n in ds.names}
    for i in range(min(len(ds), 50 * per_source * max(len(ds.names), 1))):
        name = ds.source_at(i)
        if len(out[name]) >= per_source:
            if all(len(v) >= per_source for v in out.values()):
                break
            continue
        try:
            sample = ds[i]
        except (DataError, ValueError, OSError) as err:
            return out, f"sample {i} ({name}) failed: {err}"
        tag = " (anomalous)" if sample["anomalous"] else ""
        out[name].append(f"  [{name}{tag}, mask {'yes' if sample['has_mask'] else 'no'}]\n"
                         + render_conversation(sample["conversation"]))
    return out, None


def anchors_of(cfg: TrainConfig) -> tuple[str, ...]:
    """The anchors the recipe's variant trains (the lisa variant: only [SEG])."""
    from agvas.anchors import ANCHOR_TOKENS
    from agvas.model.config import VARIANTS

    if cfg.model.variant not in VARIANTS:
        raise ValueError(f"unknown variant {cfg.model.variant!r}; choose one of {', '.join(VARIANTS)}")
    return tuple(VARIANTS[cfg.model.variant].get("anchors", ANCHOR_TOKENS))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(leaves: list[Leaf], total: int, show_bad: int = 5) -> str:
    """One line per source, then each source's bad files with the reason."""
    rows = [("source", "feeds", "found", "checked", "bad", "samples/s", "share", "epochs")]
    for leaf in leaves:
        found = "generated" if leaf.found is None and leaf.error is None else _fmt(leaf.found, "d")
        rows.append((("FAIL " if leaf.failed else "") + leaf.name, leaf.feeds, found, str(leaf.checked),
                     str(leaf.bad), _fmt(leaf.per_second, ".1f"), f"{100 * leaf.share:.1f}%",
                     _fmt(leaf.epochs(total), ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for leaf in leaves:
        if leaf.error is not None:
            lines.append(f"{leaf.name}: cannot be read: {leaf.error}")
        elif leaf.found == 0:
            lines.append(f"{leaf.name}: no samples found")
        if leaf.bad:
            lines.append(f"{leaf.name}: {leaf.bad} bad ({leaf.problems.loaded_bad} failed to load, "
                         f"{leaf.bad - leaf.problems.loaded_bad} rejected by the index):")
            for _, why in list(leaf.problems.items.items())[:show_bad]:
                lines.append(f"  - {why}")
            if leaf.bad > show_bad:
                lines.append(f"  ... and {leaf.bad - show_bad} more")
    return "\n".join(lines)


def preflight(cfg: TrainConfig, limit: int | None = 64, conversations: int = 2) -> tuple[str, bool]:
    """The whole check as text, and whether every source yields samples."""
    anchors = anchors_of(cfg)
    leaves = plan(cfg, anchors)
    run_checks(leaves, limit)
    total = cfg.steps * cfg.global_batch
    text = [f"{total:,} training samples ({cfg.steps} steps x {cfg.global_batch}); mixture rates "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in _rates(cfg.data).items()),
            format_table(leaves, total)]
    ok = not any(leaf.failed for leaf in leaves)
    if conversations > 0:
        samples, error = sample_conversations(cfg, anchors, conversations)
        text.append("sample conversations:")
        for rendered in samples.values():
            text.extend(rendered)
        if error is not None:
            text.append(f"FAIL {error}")
            ok = False
    return "\n".join(text), ok
