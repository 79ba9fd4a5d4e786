"""MVTec-AD as published: `<cls>/train/good`, `<cls>/test/<defect>`, `<cls>/ground_truth/<defect>`.

`test/good` holds the normal test images; every other test folder is a defect type whose masks are
`ground_truth/<defect>/<name>_mask.png`. The training images (all normal) go to the train split, as
in the meta.json files of the zero-shot methods the paper compares with. SRC may also be a single
class folder (`mvtec/bottle`), which is handy for a quick look.
"""

from __future__ import annotations

from pathlib import Path

from agvas.data.converters.base import NORMAL_SPECIE, Converter, Pair, Skip, list_images, subdirs


class MVTecConverter(Converter):
    name = "mvtec"
    title = "MVTec-AD"
    layout = "<cls>/train/good/*.png, <cls>/test/<defect>/*.png and <cls>/ground_truth/<defect>/<name>_mask.png"

    def scan(self, src: Path) -> list[Pair | Skip]:
        single = (src / "test").is_dir()  # SRC is one class folder
        classes = [src] if single else [d for d in subdirs(src) if (d / "test").is_dir()]
        if not classes:
            raise self.layout_error(f"no <cls>/test/ folders in {src}")
        found: list[Pair | Skip] = []
        for cls_dir in classes:
            cls = cls_dir.resolve().name if single else cls_dir.name
            good = cls_dir / "train" / NORMAL_SPECIE
            if good.is_dir():
                found += [Pair(p, None, cls, NORMAL_SPECIE, False, "train") for p in list_images(good)]
            for defect_dir in subdirs(cls_dir / "test"):
                defect = defect_dir.name
                for image in list_images(defect_dir):
                    if defect == NORMAL_SPECIE:
                        found.append(Pair(image, None, cls, defect, False))
                        continue
                    mask = cls_dir / "ground_truth" / defect / f"{image.stem}_mask.png"
                    found.append(Pair(image, mask if mask.exists() else None, cls, defect, True))
        return found
