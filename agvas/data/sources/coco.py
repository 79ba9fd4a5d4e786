"""COCO-format instance masks (polygons, RLE) and the part-segmentation sets LISA reads in that format.

pycocotools is not a dependency: polygons are filled with PIL and RLE (both the list and the
compressed-string form of COCO's mask API) is decoded here, in column-major order as COCO stores it.

- PACO-LVIS: `vlpart/paco/annotations/paco_lvis_v1_train.json`, images from COCO (`coco/` holding
  `train2017/...`, as its file names say); categories "object" or "object:part".
- Pascal-Part: `vlpart/pascal_part/train.json`, images in `vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from agvas.anchors import ANCHOR_TOKENS
from agvas.data.general import REFER_QUESTIONS, seg_sample
from agvas.data.sources.base import Reader
from agvas.io import DataError, read_image_rgb, read_json


def rle_string_counts(text: str) -> list[int]:
    """COCO's compressed RLE string -> run lengths (6-bit chars, 5 data bits, delta-coded after the 2nd)."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("compressed RLE ends inside a number")
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    total = height * width
    if any(c < 0 for c in counts) or sum(counts) != total:
        raise ValueError(f"RLE runs sum to {sum(counts)}, not {height}x{width} = {total}")
    flat = np.zeros(total, dtype=np.uint8)
    pos, value = 0, 0
    for c in counts:
        if value:
            flat[pos:pos + c] = 1
        pos += c
        value ^= 1
    return flat.reshape(width, height).T.copy()


def segmentation_mask(seg: Any, height: int, width: int) -> np.ndarray:
    """A COCO `segmentation` (polygon list, RLE with list counts, or compressed RLE) as uint8 {0,1}."""
    if isinstance(seg, list):
        layer = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(layer)
        for poly in seg:
            pts = [float(v) for v in poly]
            if len(pts) >= 6:
                draw.polygon(list(zip(pts[0::2], pts[1::2], strict=False)), fill=1)
        return np.asarray(layer, dtype=np.uint8)
    if isinstance(seg, dict) and "counts" in seg:
        h, w = (int(v) for v in seg.get("size", (height, width)))
        counts = seg["counts"]
        counts = rle_string_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
        return decode_rle(counts, h, w)
    raise ValueError(f"unknown segmentation of type {type(seg).__name__}")


def load_target(image_path: Path, seg: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """An image and the mask of one COCO-style annotation on it; `what` names the target in errors."""
    image = read_image_rgb(image_path)
    try:
        mask = segmentation_mask(seg, image.shape[0], image.shape[1])
    except (ValueError, TypeError) as err:
        raise DataError(f"{image_path}: bad segmentation of {what} ({err})") from None
    if mask.shape != image.shape[:2] or not mask.any():
        raise DataError(f"{image_path}: the mask of {what} is empty or does not match the image")
    return image, mask


def index_coco(doc: Any, where: str | os.PathLike) -> tuple[dict[int, dict], dict[int, str], list[dict]]:
    """images by id, category names by id, annotations; a malformed file is a DataError naming it."""
    try:
        images = {int(im["id"]): im for im in doc["images"]}
        cats = {int(c["id"]): str(c["name"]) for c in doc.get("categories", [])}
        anns = [a for a in doc["annotations"] if isinstance(a, dict)]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: not a COCO-format file (images, annotations, categories)") from None
    return images, cats, anns


def part_phrase(name: str, rng: np.random.Generator) -> str:
    """"bottle:cap" -> "the cap of the bottle" or "bottle cap"; "dog" -> "dog"; underscores become spaces."""
    obj, sep, part = (s.replace("_", " ").strip() for s in name.partition(":"))
    obj = obj.split("(")[0].strip()
    if not sep:
        return obj
    return f"the {part} of the {obj}" if rng.random() < 0.5 else f"{obj} {part}"


class CocoPartReader(Reader):
    """One instance or part per sample, named by its category."""

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike, name: str,
                 anchors: tuple[str, ...] = ANCHOR_TOKENS, min_area: float = 64.0) -> None:
        super().__init__(name)
        annotations, self.image_root = Path(annotations), Path(images)
        if not annotations.is_file():
            raise DataError(f"{annotations}: annotation file not found")
        imgs, cats, anns = index_coco(read_json(annotations), annotations)
        for a in anns:
            im, cat = imgs.get(a.get("image_id")), cats.get(a.get("category_id"))
            if im is None or cat is None or not a.get("segmentation"):
                self.problems.add(f"{annotations}: annotation {a.get('id')}",
                                  f"{annotations}: annotation {a.get('id')} lacks its image, category or segmentation")
                continue
            if float(a.get("area", min_area)) < min_area:
                continue
            self.items.append((im, a["segmentation"], cat))
        self.anchors = tuple(anchors)
        self._require_items(annotations)

    def describe(self, index: int) -> str:
        return str(self.image_root / self.items[index][0]["file_name"])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        im, seg, cat = self.items[index]
        image, mask = load_target(self.image_root / im["file_name"], seg, f"the {cat!r}")
        question = REFER_QUESTIONS[int(rng.integers(len(REFER_QUESTIONS)))].format(ref=part_phrase(cat, rng))
        return seg_sample(image, mask, question, self.anchors, rng)


def paco_lvis(root: str | os.PathLike, images: str | os.PathLike | None = None, name: str | None = None,
              anchors: tuple[str, ...] = ANCHOR_TOKENS) -> CocoPartReader:
    root = Path(root)
    return CocoPartReader(root / "annotations" / "paco_lvis_v1_train.json",
                          images or root.parent.parent / "coco", name or "paco-lvis", anchors)


def pascal_part(root: str | os.PathLike, images: str | os.PathLike | None = None, name: str | None = None,
                anchors: tuple[str, ...] = ANCHOR_TOKENS) -> CocoPartReader:
    root = Path(root)
    return CocoPartReader(root / "train.json", images or root / "VOCdevkit" / "VOC2010" / "JPEGImages",
                          name or "pascal-part", anchors)
