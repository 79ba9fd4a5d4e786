"""The median-deviation reference method: behaviour on synthetic surfaces and on CrackForest."""

from __future__ import annotations

import glob
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from agvas.evaluate.baselines import (
    median_deviation,
    median_deviation_levels,
    median_deviation_map,
    median_filter_u8,
)
from agvas.evaluate.metrics import CategoryAccumulator


def flat_surface(h: int, w: int, level: float = 180.0, noise: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = level + noise * rng.standard_normal((h, w))
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def scratch_mask(h: int, w: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    # A slanted line from (0.2h, 0.1w) to (0.7h, 0.9w).
    a, b = np.array([0.2 * h, 0.1 * w]), np.array([0.7 * h, 0.9 * w])
    d = b - a
    t = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(yy - (a[0] + t * d[0]), xx - (a[1] + t * d[1]))
    return dist <= width / 2


@pytest.mark.parametrize(("size", "work_size"), [((128, 160), 256), ((400, 512), 256)])
def test_dark_scratch_scores_highest(size: tuple[int, int], work_size: int) -> None:
    h, w = size
    img = flat_surface(h, w)
    scratch = scratch_mask(h, w, width=max(2, w // 80))
    img[scratch] = 60
    amap, mask = median_deviation(img, work_size=work_size)
    assert amap.shape == (h, w) and amap.dtype == np.float32 and mask.shape == (h, w)
    assert amap.min() >= 0.0 and amap.max() == pytest.approx(1.0)
    # The top-scoring pixels are on the scratch (allowing the bilinear resize a pixel of blur).
    near = ndimage.binary_dilation(scratch, iterations=2)
    top = amap >= np.quantile(amap, 1 - scratch.mean() / 2)
    assert near[top].all()
    assert amap[scratch].mean() > 0.6
    assert amap[~near].max() < 0.2
    # The binary mask (> 0.5) is essentially the scratch.
    assert mask[~near].sum() == 0 and mask[scratch].mean() > 0.6


def test_illumination_gradient_alone_gives_a_low_map() -> None:
    h, w = 200, 300
    yy, xx = np.mgrid[:h, :w]
    grey = 40 + 150 * xx / (w - 1) + 30 * yy / (h - 1)  # strong, smooth lighting gradient
    img = np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
    levels = median_deviation_levels(img)
    assert levels.shape == (h, w)
    assert levels.max() <= 4.0  # grey levels, against a 220-level range across the image
    # Same gradient with a scratch: the gradient does not compete with the defect.
    scratch = scratch_mask(h, w, width=3)
    img[scratch] = np.clip(img[scratch].astype(int) - 80, 0, 255).astype(np.uint8)
    amap = median_deviation_map(img)
    near = ndimage.binary_dilation(scratch, iterations=2)
    assert amap[~near].max() < 0.1 < 0.5 < amap[scratch].mean()


def test_flat_image_and_shapes() -> None:
    flat = np.full((37, 53, 3), 128, np.uint8)
    amap = median_deviation_map(flat)
    assert amap.shape == (37, 53) and not amap.any()
    grey = np.random.default_rng(0).integers(0, 256, (300, 70), dtype=np.uint8)
    assert median_deviation_map(grey).shape == (300, 70)
    assert median_deviation_map(grey, work_size=0).shape == (300, 70)
    assert median_deviation_map(np.zeros((0, 5, 3), np.uint8)).shape == (0, 5)


@pytest.mark.parametrize(("shape", "kernel"), [((23, 17), 5), ((40, 33), 31), ((9, 7), 4), ((6, 5), 31)])
def test_fast_median_equals_scipy(shape: tuple[int, int], kernel: int) -> None:
    q = np.random.default_rng(kernel).integers(0, 256, shape, dtype=np.uint8)
    ref = ndimage.median_filter(q, size=kernel, mode="nearest")
    np.testing.assert_array_equal(median_filter_u8(q, kernel), ref)


def _resize_like_cv2(img: np.ndarray, size: int) -> np.ndarray:
    """Plain (non-antialiased) bilinear resize, cv2.INTER_LINEAR's, via torch."""
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def test_crackforest_reference_numbers(shared_data: str) -> None:
    """The 118 annotated CrackForest images at 256x256; known reference: AP 20.9, F1-max 30.0."""
    import scipy.io as sio

    root = os.path.join(shared_data, "crackforest")
    mats = sorted(glob.glob(os.path.join(root, "groundTruth", "*.mat")))
    if not mats:
        pytest.skip("CrackForest ground truth not found")
    t0 = time.perf_counter()
    acc = CategoryAccumulator()
    for mat in mats:
        name = os.path.splitext(os.path.basename(mat))[0]
        with Image.open(os.path.join(root, "image", f"{name}.jpg")) as im:
            img = _resize_like_cv2(np.asarray(im.convert("RGB")), 256)
        seg = sio.loadmat(mat)["groundTruth"][0, 0]["Segmentation"]
        gt = Image.fromarray((seg == 2).astype(np.uint8)).resize((256, 256), Image.Resampling.NEAREST)
        amap, mask = median_deviation(img)
        acc.add(amap, np.asarray(gt), mask)
    res = acc.summarise()
    print(
        f"\nmedian-deviation on CrackForest ({res['n_images']} images, 256x256): "
        f"AP {res['ap']:.1f}  F1-max {res['f1_max']:.1f}  AUROC {res['auroc']:.1f}  "
        f"AUPRO {res['aupro']:.1f}  IoU_ano {res['iou_ano']:.1f}  ({time.perf_counter() - t0:.1f} s)"
    )
    assert res["n_images"] == len(mats) == 118
    assert 15.0 <= res["ap"] <= 30.0
    assert 20.0 <= res["f1_max"] <= 40.0
