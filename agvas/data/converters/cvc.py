"""CVC-ColonDB and CVC-ClinicDB colonoscopy polyps: an image folder and a mask folder, paired by name.

The common mirrors ship `images/` + `masks/` (PNG); CVC-ClinicDB's own archive ships `Original/` +
`Ground Truth/` as .tif. Both are accepted. Every frame shows a polyp, so all are anomalous.
"""

from __future__ import annotations

from pathlib import Path

from agvas.data.converters.base import Converter, Pair, Skip, index_masks, list_images, require_dir

_IMAGE_DIRS = ("images", "Original", "image", "imgs")
_MASK_DIRS = ("masks", "Ground Truth", "GroundTruth", "mask", "gt")


def scan_polyp_folders(converter: Converter, src: Path, cls: str) -> list[Pair | Skip]:
    """Shared by both CVC sets and Kvasir-SEG: one image folder, one mask folder, all polyps."""
    images = require_dir(src, converter, *_IMAGE_DIRS)
    masks = index_masks(require_dir(src, converter, *_MASK_DIRS))
    return [Pair(p, masks.get(p.stem), cls, "polyp", True) for p in list_images(images)]


class ColonDBConverter(Converter):
    name = "colondb"
    title = "CVC-ColonDB"
    layout = "images/*.png and masks/*.png of the same names"

    def scan(self, src: Path) -> list[Pair | Skip]:
        return scan_polyp_folders(self, src, "colondb")


class ClinicDBConverter(Converter):
    name = "clinicdb"
    title = "CVC-ClinicDB"
    layout = "images/ + masks/ (or Original/ + 'Ground Truth/'), .png or .tif of the same names"

    def scan(self, src: Path) -> list[Pair | Skip]:
        return scan_polyp_folders(self, src, "clinicdb")
