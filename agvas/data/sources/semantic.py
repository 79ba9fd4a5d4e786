"""General semantic segmentation as LISA reads it: ADE20K, COCO-Stuff, Mapillary Vistas.

Each sample names one class present in the image ("segment the chair") and the target is all of its
pixels, as in LISA's sem_seg data; a class must cover `MIN_AREA` of the image to be asked for.
Layouts (the folder names LISA's README gives under its dataset root):

- `ade20k/images/training/*.jpg`, `ade20k/annotations/training/*.png` (ADEChallengeData2016 renamed;
  pixel v = class v of `objectInfo150.csv`, 0 = other), names from `objectInfo150.csv`/`.txt` in the root
  (shipped with the challenge's devkit) or `ade20k_classes.json` (a list of 150 names).
- `cocostuff/train2017/*.png` (stuffthingmaps_trainval2017: pixel p = class p+1 of COCO-Stuff's
  `labels.txt`, 255 = unlabeled), images in `coco/train2017/*.jpg` (`images:` to point elsewhere), names
  from `labels.txt` ("0: unlabeled", "1: person", ...) or `cocostuff_classes.txt` in the root.
- `mapillary/config_v2.0.json` ({"labels": [{"readable": ...}, ...]}), `mapillary/training/images/*.jpg`,
  `mapillary/training/v2.0/labels/*.png` (palette index = label index; v1.2: `config.json`,
  `training/labels/`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from agvas.anchors import ANCHOR_TOKENS
from agvas.data.general import REFER_QUESTIONS, seg_sample
from agvas.data.sources.base import Reader
from agvas.io import DataError, open_image, read_image_rgb, read_json

MIN_AREA = 0.005
IGNORED_NAMES = frozenset({"unlabeled", "unlabelled", "other", "background", "void"})


def read_label_map(path: Path) -> np.ndarray:
    """A label PNG as its integer values (palette indices for mode P), never colour-converted."""
    im = open_image(path, what="label map")
    try:
        with im:
            im.load()
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(f"{path}: cannot read label map ({err})") from None
    if arr.ndim != 2:
        raise DataError(f"{path}: label map has shape {arr.shape}, expected H x W class indices")
    return arr


class LabelMapReader(Reader):
    """(image, label map) pairs + class names: value -> name (None: never asked for)."""

    def __init__(self, pairs: list[tuple[Path, Path]], names: dict[int, str], name: str,
                 anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        super().__init__(name)
        self.items = pairs
        self.names = names
        self.anchors = tuple(anchors)

    def describe(self, index: int) -> str:
        return str(self.items[index][1])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        image_path, label_path = self.items[index]
        image = read_image_rgb(image_path)
        labels = read_label_map(label_path)
        if labels.shape != image.shape[:2]:
            raise DataError(f"{label_path}: label map {labels.shape} does not match its image {image.shape[:2]}")
        values, counts = np.unique(labels, return_counts=True)
        present = [int(v) for v, c in zip(values, counts, strict=True)
                   if int(v) in self.names and c >= MIN_AREA * labels.size]
        if not present:
            raise DataError(f"{label_path}: no named class covers {MIN_AREA:.1%} of the image")
        v = present[int(rng.integers(len(present)))]
        question = REFER_QUESTIONS[int(rng.integers(len(REFER_QUESTIONS)))].format(ref=self.names[v])
        return seg_sample(image, (labels == v).astype(np.uint8), question, self.anchors, rng)


def _pairs(images: Path, labels: Path, reader: Reader, label_suffix: str = ".png") -> list[tuple[Path, Path]]:
    """Label maps matched to their images by stem; a label map without its image is recorded as bad.

    Driven by the label maps, not the images: COCO-Stuff's images live in the shared COCO folder, most of
    whose files other sets use."""
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found")
    if not labels.is_dir():
        raise DataError(f"{labels}: label folder not found")
    out = []
    for lab in sorted(labels.glob(f"*{label_suffix}")):
        candidates = (images / f"{lab.stem}{e}" for e in (".jpg", ".jpeg", ".png"))
        img = next((c for c in candidates if c.is_file()), None)
        if img is None:
            reader.problems.add(lab, f"{lab}: no image {lab.stem}.jpg in {images}")
        else:
            out.append((img, lab))
    return out


def _first_name(raw: str) -> str:
    return raw.replace(";", ",").split(",")[0].strip().replace("_", " ").lower()


def ade20k_names(root: Path) -> dict[int, str]:
    js = root / "ade20k_classes.json"
    if js.is_file():
        names = read_json(js)
        if not isinstance(names, list):
            raise DataError(f"{js}: expected a list of class names")
        return {i + 1: _first_name(str(n)) for i, n in enumerate(names)}
    for cand in (root / "objectInfo150.csv", root / "objectInfo150.txt"):
        if cand.is_file():
            text = cand.read_text(encoding="utf-8", errors="replace").splitlines()
            delim = "\t" if "\t" in text[0] else ","
            out = {}
            for row in csv.DictReader(text, delimiter=delim):
                try:
                    out[int(row["Idx"])] = _first_name(row["Name"])
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{cand}: expected columns Idx and Name") from None
            return out
    raise DataError(f"{root}: no class names (objectInfo150.csv from the ADE20K devkit, or ade20k_classes.json)")


class ADE20KReader(LabelMapReader):
    kind = "ade20k"

    def __init__(self, root: str | os.PathLike, split: str = "training", name: str | None = None,
                 anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        root = Path(root)
        super().__init__([], ade20k_names(root), name or self.kind, anchors)
        self.items = _pairs(root / "images" / split, root / "annotations" / split, self)
        self._require_items(root)


def cocostuff_names(root: Path) -> dict[int, str]:
    for cand in (root / "labels.txt", root / "cocostuff_classes.txt"):
        if cand.is_file():
            out = {}
            for line in cand.read_text(encoding="utf-8", errors="replace").splitlines():
                ident, sep, label = line.partition(":")
                if sep and ident.strip().isdigit() and int(ident) > 0:
                    name = _first_name(label)
                    if name not in IGNORED_NAMES:
                        out[int(ident) - 1] = name.removesuffix("-other").replace("-", " ")
            if not out:
                raise DataError(f"{cand}: expected lines 'id: name' (COCO-Stuff's labels.txt)")
            return out
    raise DataError(f"{root}: no labels.txt (COCO-Stuff's class list, 'id: name' per line)")


class CocoStuffReader(LabelMapReader):
    kind = "cocostuff"

    def __init__(self, root: str | os.PathLike, images: str | os.PathLike | None = None, split: str = "train2017",
                 name: str | None = None, anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        root = Path(root)
        image_dir = Path(images) if images else root.parent / "coco" / split
        super().__init__([], cocostuff_names(root), name or self.kind, anchors)
        self.items = _pairs(image_dir, root / split, self)
        self._require_items(root)


class MapillaryReader(LabelMapReader):
    kind = "mapillary"

    def __init__(self, root: str | os.PathLike, split: str = "training", version: str = "v2.0",
                 name: str | None = None, anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        root = Path(root)
        config = root / ("config_v2.0.json" if version == "v2.0" else "config.json")
        if not config.is_file():
            raise DataError(f"{config}: Mapillary Vistas label config not found")
        doc = read_json(config)
        try:
            labels = [str(lab.get("readable") or lab["name"]) for lab in doc["labels"]]
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{config}: expected {{'labels': [{{'readable': ...}}, ...]}}") from None
        names = {i: n.lower() for i, n in enumerate(labels) if n.lower() not in IGNORED_NAMES}
        super().__init__([], names, name or self.kind, anchors)
        label_dir = root / split / version / "labels" if version == "v2.0" else root / split / "labels"
        self.items = _pairs(root / split / "images", label_dir, self)
        self._require_items(root)
