"""Any dataset laid out as `images/` plus an optional `masks/`, matched by file stem.

A mask may carry one of the suffixes `_mask`, `_gt`, `_GT`, `_segmentation` after the image stem. An
empty mask means a normal image. Without a `masks/` folder every image is normal (a set of good
samples). With one, an image lacking a mask is ambiguous - forgotten annotation or normal image? - so
it is skipped as "missing mask" unless `missing_mask="normal"` (`--missing-mask normal`) says that the
folder only holds masks of the anomalous images. A folder inside images/ whose name looks like an image
(`y.png/`) is named once as skipped rather than ignored, since it was most likely meant as a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agvas.data.converters.base import (
    IMAGE_SUFFIXES,
    MISSING_MASK,
    NORMAL_SPECIE,
    UNREADABLE_IMAGE,
    Converter,
    Pair,
    Skip,
    find_dir,
    index_masks,
    list_images,
    require_dir,
)

MissingMask = Literal["skip", "normal"]


class FolderConverter(Converter):
    name = "folder"
    title = "a generic image folder"
    layout = "images/ and optionally masks/ (mask stems may end in _mask, _gt, _GT or _segmentation)"

    def __init__(self, cls_name: str | None = None, missing_mask: MissingMask = "skip") -> None:
        if missing_mask not in ("skip", "normal"):
            raise ValueError(f"--missing-mask must be 'skip' or 'normal', got {missing_mask!r}")
        self.cls_name = cls_name
        self.missing_mask = missing_mask

    def scan(self, src: Path) -> list[Pair | Skip]:
        images = require_dir(src, self, "images")
        mask_dir = find_dir(src, "masks")
        cls = self.cls_name or src.resolve().name
        found: list[Pair | Skip] = [
            Skip(str(p), UNREADABLE_IMAGE, f"{p}: is a folder, not an image file")
            for p in sorted(images.iterdir())
            if p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ]
        if mask_dir is None:
            return found + [Pair(p, None, cls, NORMAL_SPECIE, False) for p in list_images(images)]
        masks = index_masks(mask_dir)
        for image in list_images(images):
            mask = masks.get(image.stem)
            if mask is not None:
                found.append(Pair(image, mask, cls, "anomaly", None))
            elif self.missing_mask == "normal":
                found.append(Pair(image, None, cls, NORMAL_SPECIE, False))
            else:
                found.append(Skip(str(image), MISSING_MASK, f"{image}: no mask for it in {mask_dir} "
                                  "(if unmasked images are normal, say so with --missing-mask normal)"))
        return found
