"""RSDDs as published: `Type-I RSDDs dataset/` and `Type-II RSDDs dataset/`, each with
`Rail surface images/*.jpg` and `GroundTruth/*.jpg` of the same names.

The two types come from different railways (express vs. heavy haul) at different sizes, so they are
two classes. The masks are JPEGs, hence the grey-level threshold; the mask decides normality, since
an all-black GT means the strip shows no defect.
"""

from __future__ import annotations

import re
from pathlib import Path

from agvas.data.converters.base import Converter, Pair, Skip, index_masks, list_images, subdirs

_TYPE = re.compile(r"type[\s_\-]*(ii|i)\b", re.IGNORECASE)


class RSDDConverter(Converter):
    name = "rsdd"
    title = "RSDDs"
    layout = ("'Type-I RSDDs dataset/' and 'Type-II RSDDs dataset/', each with 'Rail surface images/*.jpg' "
              "and 'GroundTruth/*.jpg'")

    def scan(self, src: Path) -> list[Pair | Skip]:
        types = [(m.group(1).lower(), d) for d in subdirs(src) if (m := _TYPE.search(d.name))]
        if not types:
            raise self.layout_error(f"no 'Type-I RSDDs dataset/' or 'Type-II RSDDs dataset/' folder in {src}")
        found: list[Pair | Skip] = []
        for kind, folder in types:
            images = folder / "Rail surface images"
            truth = folder / "GroundTruth"
            if not images.is_dir() or not truth.is_dir():
                raise self.layout_error(f"{folder} lacks 'Rail surface images/' or 'GroundTruth/'")
            masks = index_masks(truth)
            cls = f"rail_type_{kind}"
            found += [Pair(p, masks.get(p.stem), cls, "defect", None) for p in list_images(images)]
        return found
