"""Kvasir-SEG polyps: `images/<id>.jpg` and `masks/<id>.jpg`, all anomalous.

The masks are JPEGs, so their edges carry grey levels; they are thresholded at 128 and written as
clean PNGs under DST/masks/.
"""

from __future__ import annotations

from pathlib import Path

from agvas.data.converters.base import Converter, Pair, Skip
from agvas.data.converters.cvc import scan_polyp_folders


class KvasirConverter(Converter):
    name = "kvasir"
    title = "Kvasir-SEG"
    layout = "images/<id>.jpg and masks/<id>.jpg"

    def scan(self, src: Path) -> list[Pair | Skip]:
        return scan_polyp_folders(self, src, "kvasir")
