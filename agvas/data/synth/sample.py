"""One synthetic sample: surface -> defect -> shared nuisances -> exact mask -> description.

The mask is measured, not assumed: the defect image and its defect-free twin go through the same
nuisance draw and 8-bit quantisation, and the mask keeps the pixels whose colour differs visibly
(plus tiny enclosed gaps). Outside the mask the anomalous image is copied from the twin, so it is
bit-identical to the normal image there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from agvas.data.synth.defects import DEFECTS
from agvas.data.synth.describe import describe_mask
from agvas.data.synth.realism import Nuisance, apply_nuisance, blur_reach, sample_nuisance, to_uint8, unexposed
from agvas.data.synth.textures import Base, PhotoBank, TextureBank, make_base

Array = np.ndarray

GOOD = "good"
VISIBLE_STEP = 10  # grey levels (max over channels) for a pixel to count as visibly changed
MIN_MEAN_CHANGE = 12.0  # mean |difference| (grey levels) a defect must reach inside its mask
MIN_AREA_256 = 16  # smallest defect (px at 256x256, scales with area)
MAX_GAP_256 = 48  # enclosed gaps up to this area (px at 256x256) are part of the defect
MAX_TRIES = 8
_EIGHT = np.ones((3, 3), bool)


@dataclass
class SynthSample:
    """image uint8 HxWx3; mask uint8 HxW in {0, 1}; `reference` is the same surface without the defect."""

    image: Array
    mask: Array
    meta: dict[str, Any]
    reference: Array = field(repr=False, default=None)  # type: ignore[assignment]


class SynthesisError(RuntimeError):
    """A defect that stayed invisible after every retry (a bug in a defect kind, not bad luck)."""


def visible_mask(anomalous: Array, normal: Array, region: Array, reach: int = 0, size: int = 256) -> Array:
    """Pixels that differ visibly, restricted to the painted region (grown by the blur's reach)."""
    diff = np.abs(anomalous.astype(np.int16) - normal.astype(np.int16)).max(-1)
    allowed = ndimage.binary_dilation(region, _EIGHT, iterations=reach + 1)
    vis = (diff >= VISIBLE_STEP) & allowed
    if not vis.any():
        return vis
    scale = (size / 256) ** 2
    vis |= ndimage.binary_closing(vis, _EIGHT) & allowed
    gaps = ndimage.binary_fill_holes(vis) & ~vis
    if gaps.any():
        lab, n = ndimage.label(gaps)
        small = np.flatnonzero(ndimage.sum_labels(gaps, lab, range(1, n + 1)) <= MAX_GAP_256 * scale) + 1
        vis |= np.isin(lab, small)
    lab, n = ndimage.label(vis, _EIGHT)
    if n > 1:
        sizes = ndimage.sum_labels(vis, lab, range(1, n + 1))
        vis = np.isin(lab, np.flatnonzero(sizes >= max(3, 3 * scale)) + 1)
    return vis


def _window(region: Array, margin: int, size: int) -> tuple[slice, slice]:
    """Bounding box of `region` grown by `margin` px, clipped to the image."""
    ys = np.flatnonzero(region.any(1))
    xs = np.flatnonzero(region.any(0))
    return (slice(max(0, int(ys[0]) - margin), min(size, int(ys[-1]) + 1 + margin)),
            slice(max(0, int(xs[0]) - margin), min(size, int(xs[-1]) + 1 + margin)))


def _acceptable(anomalous: Array, normal: Array, mask: Array, size: int) -> bool:
    if mask.sum() < MIN_AREA_256 * (size / 256) ** 2:
        return False
    diff = np.abs(anomalous.astype(np.int16) - normal.astype(np.int16)).mean(-1)
    return float(diff[mask].mean()) >= MIN_MEAN_CHANGE


def _paint(rng: np.random.Generator, base: Base, defect: str, nz: Nuisance | None, normal: Array,
           size: int) -> tuple[Array, Array, dict[str, Any], int] | None:
    """The defect painted on `base` under `nz` (image, exact visible mask, detail, tries), stronger on each
    try; None when it stays invisible."""
    reach = blur_reach(nz)
    for attempt in range(MAX_TRIES):
        draw = DEFECTS[defect](rng, base, 1.0 + 0.4 * attempt)
        if not draw.region.any():
            continue
        # only the neighbourhood of the painted region can differ: process just that window
        inner = _window(draw.region, reach + 2, size)
        outer = _window(draw.region, 2 * reach + 3, size)
        crop = to_uint8(apply_nuisance(draw.image[outer], nz, outer))
        rel = (slice(inner[0].start - outer[0].start, inner[0].stop - outer[0].start),
               slice(inner[1].start - outer[1].start, inner[1].stop - outer[1].start))
        anomalous, twin = crop[rel], normal[inner]
        vis = visible_mask(anomalous, twin, draw.region[inner], reach, size)
        if _acceptable(anomalous, twin, vis, size):
            mask = np.zeros((size, size), np.uint8)
            mask[inner] = vis
            image = normal.copy()
            image[inner] = np.where(vis[..., None], anomalous, twin)
            return image, mask, draw.detail, attempt + 1
    return None


def generate_sample(rng: np.random.Generator, family: str, defect: str | None, size: int = 256,
                    textures: TextureBank | PhotoBank | str | os.PathLike | None = None,
                    nuisance: float = 1.0, glare: float = 0.0, exposure: float = 0.0) -> SynthSample:
    """Draw one image of `family` with one `defect` (None: a normal image with an empty mask).

    `nuisance` scales the illumination/noise/blur variation (0 switches it off); `glare` and `exposure` are the
    chances of specular highlights and of a dark or flat exposure (`realism.sample_nuisance`). Everything random
    comes from `rng`, so a generator seeded from (seed, index) reproduces the sample exactly.
    """
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect kind {defect!r}; known: {', '.join(DEFECTS)}")
    base = make_base(rng, family, size, textures)
    nz = sample_nuisance(rng, size, nuisance, glare, exposure) if nuisance > 0 else None
    normal = to_uint8(apply_nuisance(base.image, nz))
    meta: dict[str, Any] = {"family": family, "defect": defect or GOOD, "anomaly": int(defect is not None)}
    if defect is None:
        mask = np.zeros((size, size), np.uint8)
        meta.update(describe_mask(normal, mask), detail={})
    else:
        painted = _paint(rng, base, defect, nz, normal, size)
        if painted is None and nz is not None and nz.exposure_scale != 1.0:
            # a dark or flat exposure can hide a faint defect entirely: keep the defect, drop the exposure
            nz = unexposed(nz)
            normal = to_uint8(apply_nuisance(base.image, nz))
            painted = _paint(rng, base, defect, nz, normal, size)
        if painted is None:
            raise SynthesisError(f"{defect} on {family}: no visible defect after {MAX_TRIES} tries")
        image, mask, detail, tries = painted
        meta.update(describe_mask(image, mask), detail=detail, tries=tries)
    meta["nuisance"] = nz.summary if nz is not None else {}
    return SynthSample(normal if defect is None else image, mask, meta, normal)
