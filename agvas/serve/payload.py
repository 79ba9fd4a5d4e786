"""From a SegmentationResult to what goes over the wire: PNG bytes and the JSON response.

The mask always travels at the image's full size (it is the product). The overlay and heat map are
for eyes only, so they are made at most VISUAL_MAX_SIDE pixels a side: a 16-megapixel upload must not
turn into two 40 MB base64 strings for a page that shows them 400 pixels wide.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from agvas.anchors import readable_answer
from agvas.infer.render import heat_image, overlay_image, probability_bytes
from agvas.infer.result import SegmentationResult

VISUAL_MAX_SIDE = 1024


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 HxW or HxWx3 -> PNG (fast compression: these are made per request)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """The benchmarks' convention: 0 normal, 255 anomalous."""
    return png_bytes((np.asarray(mask) > 0).astype(np.uint8) * 255)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _shrunk(image: np.ndarray, probability: np.ndarray, mask: np.ndarray,
            max_side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All three at most max_side a side (the mask by nearest neighbour, so it stays binary)."""
    h, w = mask.shape
    scale = max_side / max(h, w)
    if scale >= 1:
        return image, probability, mask
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small_image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    small_prob = np.asarray(Image.fromarray(np.ascontiguousarray(probability, dtype=np.float32)).resize(
        size, Image.Resampling.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)) > 0
    return small_image, small_prob, small_mask


def visual_pngs(image: np.ndarray, result: SegmentationResult,
                max_side: int = VISUAL_MAX_SIDE) -> tuple[bytes, bytes, bytes]:
    """(overlay PNG, heat-map PNG, grey probability-map PNG) as the page shows and re-thresholds them."""
    img, prob, mask = _shrunk(image, result.anomaly_map, result.mask, max_side)
    return png_bytes(overlay_image(img, prob, mask)), png_bytes(heat_image(prob)), png_bytes(probability_bytes(prob))


def result_payload(result: SegmentationResult, image: np.ndarray, visuals: bool, elapsed_ms: float) -> dict[str, Any]:
    """The JSON body of a segment (or chat) response; see schemas.SegmentResponse."""
    height, width = result.mask.shape
    body: dict[str, Any] = {
        "text": readable_answer(result.text), "raw_text": result.text,
        "score": float(result.score), "anomalous": bool(result.anomalous),
        "threshold": float(result.threshold), "min_area": float(result.min_area),
        "area_fraction": float(result.area_fraction), "mode": result.mode, "anchors_found": result.anchors_found,
        "text_verdict": result.text_verdict, "text_agrees": result.text_agrees,
        "note": result.note, "width": int(width), "height": int(height),
        "mask_png_base64": _b64(mask_png(result.mask)), "overlay_png_base64": None, "heat_png_base64": None,
        "map_png_base64": None,
        "elapsed_ms": round(elapsed_ms, 2),
    }
    if visuals:
        for key, png in zip(("overlay", "heat", "map"), visual_pngs(image, result), strict=True):
            body[f"{key}_png_base64"] = _b64(png)
    return body
