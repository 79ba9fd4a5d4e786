"""Pictures of a result: the binary mask (0/255, the benchmarks' convention), a heat map of P, and an
overlay of the heat map on the image with the mask's contour, so a reviewer sees both the decision and
how confident the model was around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from agvas.infer.result import SegmentationResult
from agvas.io import save_mask_png, save_png

# A jet-like ramp: dark blue (normal) through cyan and yellow to dark red (anomalous).
_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_COLOURS = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], float)
_LUT = np.stack([np.interp(np.linspace(0, 1, 256), _STOPS, _COLOURS[:, c]) for c in range(3)], -1).round()
_LUT = _LUT.astype(np.uint8)
CONTOUR_COLOUR = np.array([0, 255, 0], dtype=np.uint8)


def probability_bytes(probability: np.ndarray) -> np.ndarray:
    """P as uint8 round(255·P): the heat map's index, and what a client re-thresholds at t by
    `value > 255·t` (exact to 1/255)."""
    return (np.clip(np.nan_to_num(probability), 0.0, 1.0) * 255).round().astype(np.uint8)


def heat_image(probability: np.ndarray) -> np.ndarray:
    """A probability map in [0, 1] as uint8 HxWx3 through the ramp above."""
    return _LUT[probability_bytes(probability)]


def mask_contour(mask: np.ndarray, thickness: int | None = None) -> np.ndarray:
    """The inner boundary of a bool mask, `thickness` pixels wide (default: scaled with the image)."""
    mask = np.asarray(mask, dtype=bool)
    if thickness is None:
        thickness = max(1, round(min(mask.shape) / 256))
    if not mask.any():
        return mask
    inner = ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    return mask & ~inner


def overlay_image(image: np.ndarray, probability: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The image blended with the heat map, with the mask contour drawn on top."""
    if image.shape[:2] != probability.shape or probability.shape != mask.shape:
        raise ValueError(f"image {image.shape[:2]}, map {probability.shape} and mask {mask.shape} must match")
    blend = (1 - alpha) * image.astype(np.float32) + alpha * heat_image(probability).astype(np.float32)
    out = blend.round().clip(0, 255).astype(np.uint8)
    out[mask_contour(mask)] = CONTOUR_COLOUR
    return out


def save_result_images(folder: str | Path, stem: str, image: np.ndarray, result: SegmentationResult) -> dict[str, str]:
    """Write <stem>_mask.png, <stem>_heat.png and <stem>_overlay.png atomically; return their file names."""
    folder = Path(folder)
    names = {"mask": f"{stem}_mask.png", "heat": f"{stem}_heat.png", "overlay": f"{stem}_overlay.png"}
    save_mask_png(folder / names["mask"], result.mask)
    save_png(folder / names["heat"], heat_image(result.anomaly_map))
    save_png(folder / names["overlay"], overlay_image(image, result.anomaly_map, result.mask))
    return names
