"""CrackForest as published: `image/NNN.jpg` and `groundTruth/NNN.mat`.

The ground truth is a MATLAB struct, `['groundTruth'][0,0]['Segmentation']`, a label map in which 1 is
the road and 2 the crack; it is turned into a 0/255 PNG under DST/masks/. Some maps (22 of 118)
also carry labels 3 and 4: 3 marks road *enclosed* by cracks, 4 a few faint crack strokes. Only
label 2 counts, as the publisher documents; see CRACK_LABELS. 37 published images have no ground
truth at all; they are skipped as "no ground truth" (by design: the exit code stays 0). Every image
with a GT shows a crack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agvas.data.converters.base import NO_GROUND_TRUTH, Converter, MaskData, Pair, Skip, list_images, require_dir
from agvas.io import DataError

CLASS = "crackforest"
CRACK_LABELS = (2,)


def read_crackforest_mat(path: Path) -> np.ndarray:
    """The crack mask of one .mat ground truth, uint8 {0,1}."""
    from scipy.io import loadmat

    if not path.exists():
        raise FileNotFoundError(path)
    try:
        seg = np.asarray(loadmat(str(path))["groundTruth"][0, 0]["Segmentation"])
    except Exception as err:  # a broken .mat fails in scipy or in the struct lookup; both mean unreadable
        raise DataError(f"{path}: cannot read ground truth ({type(err).__name__}: {err})") from None
    if seg.ndim != 2:
        raise DataError(f"{path}: Segmentation has shape {seg.shape}, expected a 2-D label map")
    return np.isin(seg, CRACK_LABELS).astype(np.uint8)


class CrackForestConverter(Converter):
    name = "crackforest"
    title = "CrackForest"
    layout = "image/NNN.jpg + groundTruth/NNN.mat"

    def scan(self, src: Path) -> list[Pair | Skip]:
        images = require_dir(src, self, "image", "images")
        truth = require_dir(src, self, "groundTruth")
        found: list[Pair | Skip] = []
        for image in list_images(images):
            mat = truth / f"{image.stem}.mat"
            if mat.is_file():
                found.append(Pair(image, mat, CLASS, "crack", True))
            else:
                found.append(Skip(str(image), NO_GROUND_TRUTH, f"{image}: no groundTruth/{mat.name}", by_design=True))
        return found

    def read_mask(self, path: Path) -> MaskData:
        return MaskData(read_crackforest_mat(path), linkable=False)
