"""refCOCO, refCOCO+, refCOCOg and refCLEF in the `refer` layout, read without trusting their pickles.

Layout (as LISA and the `refer` API expect it): `refer_seg/<dataset>/instances.json` (COCO format) and
`refer_seg/<dataset>/refs(<splitBy>).p` (unc for refcoco/refcoco+/refclef, umd or google for refcocog);
images in `refer_seg/images/mscoco/images/train2014/` (COCO_train2014_*.jpg) or, for refCLEF,
`refer_seg/images/saiapr_tc-12/` joined with the file names of instances.json.

The refs files are Python 2 pickles: lists of dicts of strings and numbers. Unpickling runs code named
by the file, so a downloaded pickle is read with `RestrictedUnpickler`, which refuses every global except
the builtin containers `set`/`frozenset`: a file that asks for anything else (os.system, a class, a
reduce) is a DataError, not an execution. No convert step is needed, and none is offered.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from agvas.anchors import ANCHOR_TOKENS
from agvas.data.general import PHRASE_QUESTIONS, seg_sample
from agvas.data.sources.base import Reader
from agvas.data.sources.coco import index_coco, load_target
from agvas.io import DataError, read_json

SPLIT_BY: dict[str, str] = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}
_SAFE_GLOBALS = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"),
                 ("__builtin__", "frozenset")}


class RestrictedUnpickler(pickle.Unpickler):
    """Plain data only: dicts, lists, tuples, strings, numbers, and the builtin sets."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")


def load_pickled_data(path: str | os.PathLike) -> Any:
    """A pickle of plain data (Python 2 or 3), refusing any global that is not a builtin container."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    try:
        return RestrictedUnpickler(io.BytesIO(raw), encoding="utf-8", errors="replace").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a plain-data pickle ({err})") from None


def default_image_dir(refer_root: Path, dataset: str) -> Path:
    if dataset == "refclef":
        return refer_root / "images" / "saiapr_tc-12"
    return refer_root / "images" / "mscoco" / "images" / "train2014"


class ReferReader(Reader):
    """One referring expression per sample; the target is the referred object's instance mask."""

    def __init__(self, root: str | os.PathLike, dataset: str = "refcoco", split_by: str | None = None,
                 splits: tuple[str, ...] | list[str] = ("train",), images: str | os.PathLike | None = None,
                 name: str | None = None, anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        super().__init__(name or dataset)
        root = Path(root)
        folder = root / dataset
        split_by = split_by or SPLIT_BY.get(dataset, "unc")
        refs_path, inst_path = folder / f"refs({split_by}).p", folder / "instances.json"
        for p in (refs_path, inst_path):
            if not p.is_file():
                raise DataError(f"{p}: not found (the refer layout: refer_seg/<dataset>/instances.json, refs(...).p)")
        self.image_root = Path(images) if images else default_image_dir(root, dataset)
        refs = load_pickled_data(refs_path)
        if not isinstance(refs, list):
            raise DataError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
        imgs, _, anns = index_coco(read_json(inst_path), inst_path)
        by_id = {a.get("id"): a for a in anns}
        for i, ref in enumerate(refs):
            where = f"{refs_path}: ref {i}"
            if not isinstance(ref, dict) or ref.get("split") not in splits:
                continue
            ann, im = by_id.get(ref.get("ann_id")), imgs.get(ref.get("image_id"))
            sents = [str(s.get("sent", "")).strip() for s in ref.get("sentences", []) if isinstance(s, dict)]
            sents = [s for s in sents if s]
            if ann is None or im is None or not sents or not ann.get("segmentation"):
                self.problems.add(where, f"{where}: no annotation, image or sentence for ann_id {ref.get('ann_id')}")
                continue
            self.items.append((im, ann["segmentation"], sents))
        self.anchors = tuple(anchors)
        self._require_items(folder)

    def describe(self, index: int) -> str:
        return str(self.image_root / self.items[index][0]["file_name"])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        im, seg, sents = self.items[index]
        image, mask = load_target(self.image_root / im["file_name"], seg, "the referred object")
        text = sents[int(rng.integers(len(sents)))].rstrip(".")
        question = PHRASE_QUESTIONS[int(rng.integers(len(PHRASE_QUESTIONS)))].format(text=text)
        return seg_sample(image, mask, question, self.anchors, rng)
