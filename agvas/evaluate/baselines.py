"""Training-free reference methods: a floor that any learned model has to beat.

"median-deviation": a defect on a surface is, locally, a departure from the surface's typical
grey level. The typical level is a large median blur of the grey image: a median (unlike a mean)
ignores thin structures narrower than half the kernel, so cracks, scratches and spots do not
pull it towards themselves, while slow illumination changes pass through it. The anomaly map is
the absolute deviation of the grey level from that background.

Design choices:

* Grey level is ITU-R BT.601 luma (the weights of PIL's ``convert("L")``), resized in float and
  rounded to 8 bits at the working resolution.
* ``scipy.ndimage.median_filter`` with a 31-pixel window takes ~1 s on a 256x256 image; the grey
  level is therefore quantised to 8 bits and filtered by :func:`median_filter_u8` (exact, same
  result, ~0.1 s), and the map is computed at a working resolution whose longest side is
  ``work_size`` (default 256; images already smaller are not upsampled) and resized back to the
  input size bilinearly (PIL, antialiased when shrinking). The kernel is in working-resolution
  pixels. Past the border the edge pixel is replicated.
* Each map is divided by its own maximum, so it spans [0, 1] (a flat image gives all zeros).
  This is what the known reference figures used (CrackForest at 256x256: pixel AP 20.9,
  F1-max 30.0; we get 20.4 / 29.2 when the images are brought to 256x256 with a plain bilinear
  resize like cv2's, 26.1 / 34.2 with PIL's antialiased one, presumably because the fine
  texture that an antialiased resize smooths away is what the baseline mistakes for cracks).
  Normalising also means every image that is not perfectly flat has pixels at 1, so the binary
  mask is (almost) never empty and IoU_nor is ~0: the baseline ranks pixels, it does not reject
  images.
* The binary mask is ``map > 0.5``, the model's convention.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "grey_level",
    "median_deviation",
    "median_deviation_levels",
    "median_deviation_map",
    "median_filter_u8",
]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def grey_level(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 (or HxW, or HxWx1) as float32 HxW in 0..255."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return arr.astype(np.float32)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    return arr[..., :3].astype(np.float32) @ _LUMA


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear float resize; PIL's filter widens its support when shrinking (no aliasing)."""
    if arr.shape == (height, width):
        return arr
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    return np.array(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def median_filter_u8(grey: np.ndarray, kernel: int) -> np.ndarray:
    """Exact median filter of a uint8 image, square window, edge pixels replicated past the border.

    Equal to ``scipy.ndimage.median_filter(grey, size=kernel, mode="nearest")`` but ~10x faster
    for large windows: with only 256 grey levels, the median of a window is the first level
    whose count of pixels at or below it reaches half the window, and those counts are box sums
    of one indicator image per level (a summed-area table each), so the cost is
    O(levels x pixels) instead of O(kernel² x pixels). The loop stops once every pixel's median
    is known.
    """
    q = np.asarray(grey)
    if q.dtype != np.uint8 or q.ndim != 2:
        raise ValueError(f"expected a uint8 HxW image, got {q.dtype} {q.shape}")
    r = kernel // 2
    height, width = q.shape
    # Replicating the edge (cv2.medianBlur's border) keeps the median of a monotone ramp equal to
    # the centre pixel up to the border, so illumination gradients give no border artefacts
    # (reflecting would). For even kernels scipy centres the window one pixel right/down of the
    # middle, hence the uneven padding.
    padded = np.pad(q, ((r, kernel - 1 - r), (r, kernel - 1 - r)), mode="edge")
    need = (kernel * kernel) // 2 + 1  # scipy's rank: the element at index size // 2
    lo, hi = int(padded.min()), int(padded.max())
    out = np.full((height, width), lo, dtype=np.int32)
    indicator = np.empty(padded.shape, dtype=np.int32)
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int32)
    inner = table[1:, 1:]
    for level in range(lo, hi):
        np.less_equal(padded, level, out=indicator)
        np.cumsum(indicator, axis=0, out=inner)
        np.cumsum(inner, axis=1, out=inner)
        box = table[kernel:, kernel:] - table[:-kernel, kernel:] - table[kernel:, :-kernel]
        box += table[:-kernel, :-kernel]
        below = box < need  # median is above this level
        if not below.any():
            break
        out += below
    return out.astype(np.uint8)


def median_deviation_levels(image: np.ndarray, kernel: int = 31, work_size: int = 256) -> np.ndarray:
    """|grey - median blur(grey)| in grey levels (0..255), float32 HxW, not normalised.

    The un-normalised deviation is what says whether an image has anything at all (a flat or
    smoothly lit surface stays near 0 here, while the normalised map always reaches 1).

    Args:
        image: uint8 HxWx3 RGB (HxW grey is accepted too).
        kernel: side of the square median window, in working-resolution pixels; it has to be
            wider than twice the widest defect for the defect not to leak into the background.
        work_size: longest side of the working resolution (<= 0: work at full size).
    """
    if kernel < 1:
        raise ValueError(f"kernel must be >= 1, got {kernel}")
    grey = grey_level(image)
    height, width = grey.shape
    if height == 0 or width == 0:
        return np.zeros((height, width), dtype=np.float32)
    scale = work_size / max(height, width) if work_size > 0 else 1.0
    work = grey
    if scale < 1.0:
        work = _resize(grey, max(1, round(height * scale)), max(1, round(width * scale)))
    # 8-bit grey, as the common cv2.medianBlur route has it (and what makes the fast exact
    # filter possible); the deviation is taken on the same quantised image.
    q = np.clip(np.rint(work), 0, 255).astype(np.uint8)
    background = median_filter_u8(q, kernel)
    dev = np.abs(q.astype(np.float32) - background.astype(np.float32))
    return _resize(dev, height, width)


def median_deviation_map(image: np.ndarray, kernel: int = 31, work_size: int = 256) -> np.ndarray:
    """Anomaly map float32 HxW in [0, 1]: :func:`median_deviation_levels` over its maximum.

    Per-image max normalisation is the variant the known reference figures were measured with;
    an image with no deviation at all gives an all-zero map.
    """
    dev = median_deviation_levels(image, kernel=kernel, work_size=work_size)
    peak = float(dev.max(initial=0.0))
    if not peak > 0.0:
        return np.zeros(dev.shape, dtype=np.float32)
    dev /= peak
    np.clip(dev, 0.0, 1.0, out=dev)
    return dev


def median_deviation(
    image: np.ndarray, kernel: int = 31, work_size: int = 256, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline as a segmenter: (anomaly map in [0, 1], binary mask ``map > threshold``)."""
    amap = median_deviation_map(image, kernel=kernel, work_size=work_size)
    return amap, amap > threshold
