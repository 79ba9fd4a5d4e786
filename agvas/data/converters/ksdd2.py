"""KolektorSDD2 as published: `train/` and `test/` with `NNNNN.png` and its `NNNNN_GT.png`.

Every image has a GT; an all-zero GT is how KSDD2 marks a normal image, so the mask decides.
"""

from __future__ import annotations

from pathlib import Path

from agvas.data.converters.base import Converter, Pair, Skip, list_images

CLASS = "ksdd2"


class KSDD2Converter(Converter):
    name = "ksdd2"
    title = "KolektorSDD2"
    layout = "train/ and test/ with NNNNN.png and NNNNN_GT.png"

    def scan(self, src: Path) -> list[Pair | Skip]:
        splits = [s for s in ("train", "test") if (src / s).is_dir()]
        if not splits:
            raise self.layout_error(f"no train/ or test/ folder in {src}")
        found: list[Pair | Skip] = []
        for split in splits:
            files = list_images(src / split, (".png",))
            gts = {p.stem[: -len("_GT")]: p for p in files if p.stem.upper().endswith("_GT")}
            for image in files:
                if image.stem.upper().endswith("_GT"):
                    continue
                found.append(Pair(image, gts.get(image.stem), CLASS, "defect", None, split))
        return found
