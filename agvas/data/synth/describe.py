"""Words for a defect mask: where, how big, what shape, what colour, how many pieces.

These words feed the instruction templates (Expectation / Observation / Diagnosis), so they are
computed from the final mask and image rather than from the generator's intentions: what the
annotation says is what a viewer can see.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

Array = np.ndarray

_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "center", "right")
SIZE_WORDS = ((0.005, "tiny"), (0.02, "small"), (0.08, "medium"), (1.01, "large"))
_EIGHT = np.ones((3, 3), bool)


def grid_location(cy: float, cx: float, h: int, w: int) -> str:
    """A 3x3-grid position in words: 'top left', 'top', 'center', 'bottom right', ..."""
    r = _ROWS[min(int(3 * cy / h), 2)]
    c = _COLS[min(int(3 * cx / w), 2)]
    if r == "middle":
        return "center" if c == "center" else c
    return r if c == "center" else f"{r} {c}"


def size_word(fraction: float) -> str:
    for limit, word in SIZE_WORDS:
        if fraction < limit:
            return word
    return SIZE_WORDS[-1][1]


def shape_word(mask: Array, labels: Array, n: int) -> str:
    """Geometry of the defect: scattered / elongated / thin and winding / round / oval / irregular."""
    sizes = ndimage.sum_labels(mask, labels, range(1, n + 1)) if n else np.zeros(0)
    if n >= 3 and sizes.max() < 0.6 * sizes.sum():
        return "scattered"
    comp = labels == (int(np.argmax(sizes)) + 1)
    ys, xs = np.nonzero(comp)
    area = ys.size
    if area < 3:
        return "round"
    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) + np.eye(2) / 12  # pixel extent
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    elong = float(np.sqrt(ev[0] / max(ev[1], 1e-6)))
    fill = area / (np.pi * 4 * np.sqrt(ev[0] * ev[1]))  # area / equivalent-ellipse area
    if elong >= 3.5:
        return "elongated"
    if fill < 0.45:
        return "thin and winding"
    if fill > 0.85 and elong < 1.5:
        return "round"
    if fill > 0.85:
        return "oval"
    return "irregular"


def _hue_word(dr: float, dg: float, db: float) -> str:
    """Name the direction of a chroma shift (RGB differences with the grey component removed)."""
    a = dr - dg  # red-green axis
    b = (dr + dg) / 2 - db  # yellow-blue axis
    ang = np.degrees(np.arctan2(b, a)) % 360
    for limit, word in ((30, "reddish"), (75, "orange"), (120, "yellowish"), (200, "greenish"),
                        (290, "bluish"), (345, "purplish"), (360, "reddish")):
        if ang < limit:
            return word
    return "reddish"


def colour_word(image: Array, mask: Array, ring_px: int = 5) -> tuple[str, list[float]]:
    """How the defect looks against its immediate surrounding: darker/brighter and/or a hue.

    Returns the phrase and the mean RGB difference (inside minus surrounding ring, 0-1 scale).
    """
    if not mask.any() or mask.all():
        return "similar", [0.0, 0.0, 0.0]
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    win = (slice(max(0, ys[0] - ring_px - 1), ys[-1] + ring_px + 2),
           slice(max(0, xs[0] - ring_px - 1), xs[-1] + ring_px + 2))
    mask, image = mask[win], image[win]  # the ring only needs the defect's neighbourhood
    ring = ndimage.binary_dilation(mask, _EIGHT, iterations=ring_px) & ~mask
    if not ring.any():
        return "similar", [0.0, 0.0, 0.0]
    img = image.astype(np.float32) / 255.0
    inside, around = img[mask].mean(0), img[ring].mean(0)
    d = inside - around
    lum = float(d @ np.array([0.299, 0.587, 0.114], np.float32))
    words = []
    if lum < -0.04:
        words.append("darker")
    elif lum > 0.04:
        words.append("brighter")
    # hue from chromaticity (colour / brightness): plain darkening of a brown surface is not "bluish"
    if min(inside.sum(), around.sum()) > 0.25:
        base = around / around.sum() - 1 / 3  # the surrounding's own colourfulness
        chroma = inside / inside.sum() - around / around.sum()
        if float(np.abs(chroma).max()) > 0.03:
            cos = float(chroma @ base) / (float(np.linalg.norm(chroma) * np.linalg.norm(base)) + 1e-9)
            if np.linalg.norm(base) > 0.02 and cos < -0.85:  # towards grey: washed out, not a new hue
                words.append("paler" if lum > 0 else "greyish")
            elif np.linalg.norm(base) > 0.02 and cos > 0.85:
                words.append("more saturated")
            else:
                words.append(_hue_word(*chroma.tolist()))
    if not words:
        words.append("similar in colour, different in texture")
    return " and ".join(words), [round(float(v), 4) for v in d]


def describe_mask(image: Array, mask: Array) -> dict[str, Any]:
    """All descriptive fields for one image; a normal (empty-mask) image gets nulls and zeros."""
    h, w = mask.shape
    m = mask.astype(bool)
    if not m.any():
        return {"location": None, "area_fraction": 0.0, "size": None, "shape": None, "colour": None,
                "colour_delta_rgb": None, "n_regions": 0, "bbox": None, "regions": []}
    labels, n = ndimage.label(m, _EIGHT)
    ys, xs = np.nonzero(m)
    frac = float(m.mean())
    regions = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == i
        cy, cx = ndimage.center_of_mass(comp)
        cy, cx = cy + sl[0].start, cx + sl[1].start
        regions.append({"location": grid_location(cy, cx, h, w), "area_px": int(comp.sum()),
                        "bbox": [sl[1].start, sl[0].start, sl[1].stop, sl[0].stop]})
    regions.sort(key=lambda r: -r["area_px"])
    colour, delta = colour_word(image, m)
    locs = list(dict.fromkeys(r["location"] for r in regions))
    return {
        "location": grid_location(float(ys.mean()), float(xs.mean()), h, w) if len(locs) > 1 and n > 3
        else regions[0]["location"],
        "area_fraction": round(frac, 5),
        "size": size_word(frac),
        "shape": shape_word(m, labels, n),
        "colour": colour,
        "colour_delta_rgb": delta,
        "n_regions": int(n),
        "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
        "regions": regions[:8],
    }
