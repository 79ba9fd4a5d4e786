"""ReasonSeg (LISA): `reason_seg/ReasonSeg/<split>/<name>.jpg` + `<name>.json` ({"text": [...],
"is_sentence": bool, "shapes": [{"label", "points"}]}), one image and its polygons per sample.

The annotation is parsed by `agvas.data.general.load_lisa_item` (the parser of `data.lisa_folders`);
this reader adds what a long run needs: an image without its JSON (or the reverse) is listed as bad
when indexed, and a file that fails to load is counted and skipped instead of ending the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agvas.anchors import ANCHOR_TOKENS
from agvas.data.general import lisa_sample, load_lisa_item
from agvas.data.sources.base import Reader, images_in
from agvas.io import DataError


class ReasonSegReader(Reader):
    kind = "reasonseg"

    def __init__(self, root: str | os.PathLike, split: str = "train", name: str | None = None,
                 anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        super().__init__(name)
        root = Path(root)
        folder = root / split if (root / split).is_dir() else root
        if not folder.is_dir():
            raise DataError(f"{folder}: ReasonSeg folder not found")
        jsons = {p.stem: p for p in folder.glob("*.json")}
        for img in images_in(folder):
            if img.stem not in jsons:
                self.problems.add(img, f"{img}: no annotation {img.with_suffix('.json').name}")
        stems = {p.stem for p in images_in(folder)}
        for stem, js in sorted(jsons.items()):
            if stem in stems:
                self.items.append(js)
            else:
                self.problems.add(js, f"{js}: no image with the same name")
        self.anchors = tuple(anchors)
        self._require_items(folder)

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        item = load_lisa_item(self.items[index])
        if not item.mask.any():
            raise DataError(f"{self.items[index]}: no target polygon")
        return lisa_sample(item, self.anchors, rng)
