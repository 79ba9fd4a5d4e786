"""Readers of the paper's real anomaly sets (Anomaly-Seg20K's images), each in its publisher's layout.

They all end as meta.json-like `Entry` lists drawn through `EntryPool`, so they join the real pool
beside `data.anomaly_datasets` and feed both anomaly sources (Anomaly-Seg and Anomaly-Instruct).
Files are only checked for existence when indexed (Real-IAD has 150 000 images); decoding problems
are found when drawn, or by `agvas data check`.

- Real-IAD: `realiad_jsons/<category>.json` = {"meta": {...}, "train": [...], "test": [...]}, each item
  {"category", "anomaly_class" ("OK" = good), "image_path", "mask_path"} relative to
  `<images>/<category>/`; images under `realiad_1024/` (or `_512`, `_256`). The paper uses the C1 view
  only (file names carry `_C1_`): `views: [C1]` by default.
- GoodsAD, MIAD, DTD-Synthetic: MVTec-AD's layout, `<category>/train/good/*`, `<category>/test/<kind>/*`,
  `<category>/ground_truth/<kind>/<stem>_mask.png` (or `<stem>.png`).
- ZJU-Leaper: `Images/<id>.jpg`, `Annotations/masks/<id>.png`, `Annotations/xmls/<id>.xml` (its
  `<pattern>`), split lists in `ImageSets/total.json` (or `Patterns/patternN.json`, `Groups/groupN.json`)
  = {"normal": {"train": [ids], "test": [...]}, "defect": {...}}.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from agvas.data.meta import Entry
from agvas.data.sources.base import Problems, images_in, rel
from agvas.io import DataError, read_json

GOOD_DIRS = ("good", "ok", "normal", "defect-free", "defect_free")


def _entry(img: str, mask: str, cls: str, kind: str, anomalous: bool) -> Entry:
    return Entry(img, mask if anomalous else "", cls, kind, int(anomalous))


def mvtec_style_entries(root: str | os.PathLike, splits: Sequence[str] = ("train", "test"),
                        classes: Collection[str] | None = None) -> tuple[list[Entry], Problems]:
    """GoodsAD / MIAD / DTD-Synthetic (MVTec-AD layout): every image of the splits, masks looked up in
    `ground_truth/<kind>/` as `<stem>_mask.png` or `<stem>.png`; a defective image without one is bad."""
    root = Path(root)
    entries: list[Entry] = []
    problems = Problems()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    for cat in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if classes is not None and cat.name not in classes:
            continue
        for split in splits:
            split_dir = cat / split
            if not split_dir.is_dir():
                continue
            for kind_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                good = kind_dir.name.lower() in GOOD_DIRS
                for img in images_in(kind_dir):
                    if good:
                        entries.append(_entry(rel(img, root), "", cat.name, "good", False))
                        continue
                    gt = cat / "ground_truth" / kind_dir.name
                    mask = next((m for m in (gt / f"{img.stem}_mask.png", gt / f"{img.stem}.png",
                                             gt / f"{img.stem}_mask{img.suffix}") if m.is_file()), None)
                    if mask is None:
                        problems.add(img, f"{img}: defective image without a mask in {gt}")
                        continue
                    entries.append(_entry(rel(img, root), rel(mask, root), cat.name, kind_dir.name, True))
    return entries, problems


def _json_dir(root: Path) -> Path:
    for cand in (root / "realiad_jsons" / "realiad_jsons", root / "realiad_jsons"):
        if cand.is_dir():
            return cand
    raise DataError(f"{root}: no realiad_jsons/ folder (Real-IAD's split files)")


def _image_dir(root: Path, resolution: str | None) -> Path:
    names = [f"realiad_{resolution}"] if resolution else ["realiad_1024", "realiad_512", "realiad_256", "realiad_raw"]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no image folder {' or '.join(names)}")


def realiad_entries(root: str | os.PathLike, splits: Sequence[str] = ("train", "test"),
                    classes: Collection[str] | None = None, views: Collection[str] | None = ("C1",),
                    resolution: str | None = None) -> tuple[list[Entry], Problems]:
    """Real-IAD from its per-category JSON split files; paths in them are relative to the category folder."""
    root = Path(root)
    jsons, images = _json_dir(root), _image_dir(root, resolution)
    entries: list[Entry] = []
    problems = Problems()
    tags = None if views is None else {f"_{v}_" for v in views}
    for jf in sorted(jsons.glob("*.json")):
        if classes is not None and jf.stem not in classes:
            continue
        try:
            doc = read_json(jf)
            meta = doc.get("meta", {}) if isinstance(doc, dict) else {}
            normal_class = str(meta.get("normal_class", "OK")) if isinstance(meta, dict) else "OK"
        except DataError as err:
            problems.add(jf, str(err))
            continue
        for split in splits:
            items: Any = doc.get(split, [])
            if not isinstance(items, list):
                problems.add(jf, f"{jf}: '{split}' is not a list")
                continue
            for i, it in enumerate(items):
                where = f"{jf}: {split}[{i}]"
                if not isinstance(it, dict) or not it.get("image_path"):
                    problems.add(where, f"{where}: expected an object with image_path")
                    continue
                img_rel = str(it["image_path"])
                if tags is not None and not any(t in Path(img_rel).name for t in tags):
                    continue
                cat = str(it.get("category") or jf.stem)
                anomalous = str(it.get("anomaly_class", normal_class)) != normal_class
                base = images / cat if (images / cat / img_rel).is_file() else images
                img = base / img_rel
                if not img.is_file():
                    problems.add(img, f"{where}: image {img} not found")
                    continue
                mask_rel = it.get("mask_path") or ""
                mask = base / str(mask_rel) if mask_rel else None
                if anomalous and (mask is None or not mask.is_file()):
                    problems.add(img, f"{where}: defective image without its mask {mask}")
                    continue
                entries.append(_entry(rel(img, root), rel(mask, root) if mask is not None and anomalous else "",
                                      cat, str(it.get("anomaly_class", "")), anomalous))
    return entries, problems


def _leaper_id(raw: Any) -> str:
    return f"{raw:06d}" if isinstance(raw, int) else str(raw)


def zju_leaper_entries(root: str | os.PathLike, splits: Sequence[str] = ("train", "test"),
                       image_set: str = "total") -> tuple[list[Entry], Problems]:
    """ZJU-Leaper from an ImageSets JSON ("total", "patternN" or "groupN"); the class is the fabric's
    pattern from its XML ("pattern7"), a defective image without a mask PNG is bad."""
    root = Path(root)
    if image_set == "total":
        set_file = root / "ImageSets" / "total.json"
    else:
        sub = "Patterns" if image_set.startswith("pattern") else "Groups"
        set_file = root / "ImageSets" / sub / f"{image_set}.json"
    if not set_file.is_file():
        raise DataError(f"{set_file}: ZJU-Leaper split file not found")
    doc = read_json(set_file)
    entries: list[Entry] = []
    problems = Problems()
    for kind in ("normal", "defect"):
        for split in splits:
            ids = (doc.get(kind) or {}).get(split, []) if isinstance(doc, dict) else []
            for raw in ids:
                iid = _leaper_id(raw)
                img = next((root / "Images" / f"{iid}{e}" for e in (".jpg", ".png")
                            if (root / "Images" / f"{iid}{e}").is_file()), None)
                if img is None:
                    problems.add(root / "Images" / f"{iid}.jpg", f"{set_file}: image {iid} not in {root / 'Images'}")
                    continue
                cls = "fabric"
                xml = root / "Annotations" / "xmls" / f"{iid}.xml"
                if xml.is_file():
                    try:
                        cls = f"pattern{int(ET.parse(xml).findtext('pattern', '0'))}"
                    except (ET.ParseError, ValueError) as err:
                        problems.add(xml, f"{xml}: unreadable annotation ({err})")
                        continue
                mask = root / "Annotations" / "masks" / f"{iid}.png"
                anomalous = kind == "defect"
                if anomalous and not mask.is_file():
                    problems.add(img, f"{img}: defective image without its mask {mask}")
                    continue
                entries.append(_entry(rel(img, root), rel(mask, root), cls, kind, anomalous))
    return entries, problems
