"""ISIC skin-lesion challenges (2016-2018): `*Data*` (or `*Input*`) folders of `ISIC_XXXXXXX.jpg`
beside `*GroundTruth*` folders of `ISIC_XXXXXXX_segmentation.png`.

Folder names change every year, so any folder whose name contains Data/Input is an image folder and
any containing GroundTruth a mask folder; masks are matched by ISIC id. Every image shows a lesion,
so all are anomalous. A folder named for training goes to the train split, the rest to test. The
`_superpixels.png` files that ship inside the 2017 image folders are not images of the set.
"""

from __future__ import annotations

from pathlib import Path

from agvas.data.converters.base import Converter, Pair, Skip, index_masks, list_images, subdirs

CLASS = "isic"


class ISICConverter(Converter):
    name = "isic"
    title = "ISIC"
    layout = "ISIC-*_Data/ISIC_XXXXXXX.jpg and ISIC-*_GroundTruth/ISIC_XXXXXXX_segmentation.png"

    def scan(self, src: Path) -> list[Pair | Skip]:
        folders = subdirs(src)
        truth_dirs = [d for d in folders if "groundtruth" in d.name.lower()]
        data_dirs = [d for d in folders if d not in truth_dirs
                     and ("data" in d.name.lower() or "input" in d.name.lower())]
        if not data_dirs:
            raise self.layout_error(f"no *Data* image folder in {src}")
        if not truth_dirs:
            raise self.layout_error(f"no *GroundTruth* mask folder in {src}")
        masks: dict[str, Path] = {}
        for truth in truth_dirs:
            masks.update(index_masks(truth))
        found: list[Pair | Skip] = []
        for data in data_dirs:
            split = "train" if "train" in data.name.lower() else "test"
            for image in list_images(data, (".jpg", ".jpeg", ".png")):
                if image.stem.lower().endswith("_superpixels"):
                    continue
                found.append(Pair(image, masks.get(image.stem), CLASS, "lesion", True, split))
        return found
