"""Magnetic-Tile-Defect as published: `MT_<Defect>/Imgs/*.jpg`, each with a `.png` mask of the same stem
in the same folder.

It is one product, so one class ("magnetic_tile") whose species are the defect folders (Blowhole,
Break, Crack, Fray, Uneven). `MT_Free` holds the defect-free tiles; their masks are empty and are not
read.
"""

from __future__ import annotations

from pathlib import Path

from agvas.data.converters.base import NORMAL_SPECIE, Converter, Pair, Skip, find_dir, list_images, subdirs

CLASS = "magnetic_tile"
FREE = "free"


class MTDConverter(Converter):
    name = "mtd"
    title = "Magnetic-Tile-Defect"
    layout = "MT_<Defect>/Imgs/*.jpg with a .png mask of the same stem beside each, and MT_Free/ for normal tiles"

    def scan(self, src: Path) -> list[Pair | Skip]:
        defects = [d for d in subdirs(src) if d.name.lower().startswith("mt_")]
        if not defects:
            raise self.layout_error(f"no MT_<Defect>/ folders in {src}")
        found: list[Pair | Skip] = []
        for folder in defects:
            imgs = find_dir(folder, "Imgs") or folder
            defect = folder.name[3:].lower()
            masks = {p.stem: p for p in list_images(imgs, (".png",))}
            for image in list_images(imgs, (".jpg", ".jpeg", ".bmp")):
                if defect == FREE:
                    found.append(Pair(image, None, CLASS, NORMAL_SPECIE, False))
                else:
                    found.append(Pair(image, masks.get(image.stem), CLASS, defect, True))
        return found
