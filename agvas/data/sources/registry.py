"""`data.sources` entries of a recipe -> readers: which kinds exist, which keys each takes, which
mixture source each feeds.

An entry is a mapping {kind, root, weight, name, ...}. Anomaly kinds join the real pool beside
`data.anomaly_datasets` (both anomaly sources draw from it); general kinds feed the general source,
`llava-instruct` the VQA source, `anomaly-instruct` the Anomaly-Instruct source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from agvas.data.sources import anomaly, coco, semantic
from agvas.data.sources.base import EntryPool, Reader
from agvas.data.sources.instruct import AnomalyInstructReader
from agvas.data.sources.llava import LlavaInstructReader
from agvas.data.sources.reasonseg import ReasonSegReader
from agvas.data.sources.refer import ReferReader
from agvas.io import DataError

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None


def _anomaly(fn: Callable[..., Any], keys: tuple[str, ...]) -> Callable[..., Reader]:
    def make(spec: Mapping[str, Any], name: str, anchors: tuple[str, ...], augment: Augment) -> Reader:
        kwargs = {k: spec[k] for k in keys if k in spec}
        entries, problems = fn(spec["root"], **kwargs)
        pool = EntryPool(spec["root"], entries, name, augment)
        pool.problems = problems
        pool._require_items(spec["root"])
        return pool
    return make


def _plain(cls: Callable[..., Reader], keys: tuple[str, ...]) -> Callable[..., Reader]:
    def make(spec: Mapping[str, Any], name: str, anchors: tuple[str, ...], augment: Augment) -> Reader:
        return cls(spec["root"], name=name, anchors=anchors, **{k: spec[k] for k in keys if k in spec})
    return make


def _refer(dataset: str) -> Callable[..., Reader]:
    keys = ("split_by", "splits", "images")

    def make(spec: Mapping[str, Any], name: str, anchors: tuple[str, ...], augment: Augment) -> Reader:
        kw = {k: spec[k] for k in keys if k in spec}
        return ReferReader(spec["root"], dataset, name=name, anchors=anchors, **kw)
    return make


def _instruct(spec: Mapping[str, Any], name: str, anchors: tuple[str, ...], augment: Augment) -> Reader:
    return AnomalyInstructReader(spec["records"], spec["root"], splits=spec.get("splits", ("train", "test")),
                                 name=name, augment=augment)


_MVTEC_KEYS = ("splits", "classes")
KINDS: dict[str, tuple[str, tuple[str, ...], Callable[..., Reader]]] = {
    # kind: (mixture role, keys besides kind/root/name/weight, factory)
    "real-iad": ("anomaly", ("splits", "classes", "views", "resolution"),
                 _anomaly(anomaly.realiad_entries, ("splits", "classes", "views", "resolution"))),
    "goodsad": ("anomaly", _MVTEC_KEYS, _anomaly(anomaly.mvtec_style_entries, _MVTEC_KEYS)),
    "miad": ("anomaly", _MVTEC_KEYS, _anomaly(anomaly.mvtec_style_entries, _MVTEC_KEYS)),
    "dtd-synthetic": ("anomaly", _MVTEC_KEYS, _anomaly(anomaly.mvtec_style_entries, _MVTEC_KEYS)),
    "zju-leaper": ("anomaly", ("splits", "image_set"),
                   _anomaly(anomaly.zju_leaper_entries, ("splits", "image_set"))),
    "ade20k": ("general", ("split",), _plain(semantic.ADE20KReader, ("split",))),
    "cocostuff": ("general", ("images", "split"), _plain(semantic.CocoStuffReader, ("images", "split"))),
    "mapillary": ("general", ("split", "version"), _plain(semantic.MapillaryReader, ("split", "version"))),
    "paco-lvis": ("general", ("images",), _plain(partial(coco.paco_lvis), ("images",))),
    "pascal-part": ("general", ("images",), _plain(partial(coco.pascal_part), ("images",))),
    "refcoco": ("general", ("split_by", "splits", "images"), _refer("refcoco")),
    "refcoco+": ("general", ("split_by", "splits", "images"), _refer("refcoco+")),
    "refcocog": ("general", ("split_by", "splits", "images"), _refer("refcocog")),
    "refclef": ("general", ("split_by", "splits", "images"), _refer("refclef")),
    "reasonseg": ("general", ("split",), _plain(ReasonSegReader, ("split",))),
    "llava-instruct": ("vqa", ("images", "file"), _plain(LlavaInstructReader, ("images", "file"))),
    "anomaly-instruct": ("anomaly-instruct", ("records", "splits"), _instruct),
}
ROLES: tuple[str, ...] = ("anomaly", "general", "vqa", "anomaly-instruct")


@dataclass
class SourceSpec:
    """One validated `data.sources` entry."""

    kind: str
    name: str
    role: str
    weight: float
    spec: dict[str, Any]

    def build(self, anchors: tuple[str, ...], augment: Augment = None) -> Reader:
        return KINDS[self.kind][2](self.spec, self.name, anchors, augment)


def parse_sources(raw: list[Any]) -> list[SourceSpec]:
    """Check every entry's kind and keys (unknown ones are errors, as everywhere in a recipe)."""
    out: list[SourceSpec] = []
    names: set[str] = set()
    for i, spec in enumerate(raw):
        where = f"data.sources[{i}]"
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise ValueError(f"{where}: expected a mapping with 'kind' (one of {', '.join(KINDS)}), got {spec!r}")
        kind = str(spec["kind"])
        if kind not in KINDS:
            raise ValueError(f"{where}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
        role, keys, _ = KINDS[kind]
        allowed = {"kind", "root", "name", "weight", *keys}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ValueError(f"{where} ({kind}): unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(allowed))}")
        if "root" not in spec or (kind == "anomaly-instruct" and "records" not in spec):
            extra = " and 'records'" if kind == "anomaly-instruct" else ""
            raise ValueError(f"{where} ({kind}): needs 'root'{extra}")
        name = str(spec.get("name", kind))
        if name in names:
            raise ValueError(f"{where}: a second source named {name!r}; give it a distinct 'name'")
        names.add(name)
        weight = float(spec.get("weight", 1.0))
        if weight < 0:
            raise ValueError(f"{where}: weight must be >= 0, got {weight}")
        out.append(SourceSpec(kind, name, role, weight, dict(spec)))
    return out


def build_sources(specs: list[SourceSpec], anchors: tuple[str, ...], augment: Augment = None
                  ) -> dict[str, list[tuple[SourceSpec, Reader]]]:
    """role -> [(spec, reader)] for the entries of positive weight; a source that cannot be read is an
    error naming it (the pre-flight check reports them all at once instead)."""
    out: dict[str, list[tuple[SourceSpec, Reader]]] = {r: [] for r in ROLES}
    for s in specs:
        if s.weight <= 0:
            continue
        try:
            out[s.role].append((s, s.build(anchors, augment)))
        except DataError as err:
            raise DataError(f"data.sources {s.name} ({s.kind}): {err}") from None
    return out
