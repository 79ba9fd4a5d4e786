"""VisA as published: `split_csv/1cls.csv` lists every image with its split, label and mask.

The csv (columns object, split, label, image, mask; paths relative to the VisA root) is the
publisher's own split, so it is followed rather than the folder names. VisA masks are label maps
(0 background, k > 0 for the k-th defect), hence the >0 threshold.
"""

from __future__ import annotations

import csv
from pathlib import Path

from agvas.data.converters.base import NORMAL_SPECIE, Converter, Pair, Skip

_COLUMNS = ("object", "split", "label", "image", "mask")


class VisAConverter(Converter):
    name = "visa"
    title = "VisA"
    layout = ("split_csv/1cls.csv (object,split,label,image,mask) with <cls>/Data/Images/{Normal,Anomaly}/*.JPG "
              "and <cls>/Data/Masks/Anomaly/*.png")
    mask_threshold = 1

    def scan(self, src: Path) -> list[Pair | Skip]:
        table = src / "split_csv" / "1cls.csv"
        if not table.is_file():
            raise self.layout_error(f"no split_csv/1cls.csv in {src}")
        with table.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise self.layout_error(f"{table} lacks column(s) {', '.join(missing)}")
            rows = list(reader)
        found: list[Pair | Skip] = []
        for row in rows:
            image = src / row["image"].strip()
            anomalous = row["label"].strip().lower() not in ("normal", "good", "0")
            mask = row["mask"].strip()
            split = "train" if row["split"].strip().lower() == "train" else "test"
            found.append(Pair(
                image, src / mask if anomalous and mask else None, row["object"].strip(),
                "bad" if anomalous else NORMAL_SPECIE, anomalous, split,
            ))
        return found
