"""Batching mixture samples: tensors for pixels, lists for text; the model side does the rest.

The data pipeline stops at raw uint8 pixels and plain conversations on purpose: tokenisation (with
the anchor tokens) and the two encoders' preprocessing belong to the model, which passes its own
`processor` here. Nothing in this package imports `agvas.model`.

Batch keys: "images" uint8 B x 3 x H x W, "masks" float32 B x H x W in {0,1}, "conversations" list of
conversations, "has_mask" bool B, "anomalous" bool B, "sources" list of str.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch


def collate(samples: Sequence[Mapping[str, Any]],
            processor: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """Stack a list of sample dicts; with a processor, return `processor(batch)` instead of the batch."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    shapes = {np.asarray(s["image"]).shape for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"images differ in shape {sorted(shapes)}; give the dataset an image_size")
    images = np.stack([np.asarray(s["image"], dtype=np.uint8) for s in samples])
    masks = np.stack([np.asarray(s["mask"]) > 0 for s in samples]).astype(np.float32)
    batch: dict[str, Any] = {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "masks": torch.from_numpy(masks),
        "conversations": [s["conversation"] for s in samples],
        "has_mask": torch.tensor([bool(s["has_mask"]) for s in samples], dtype=torch.bool),
        "anomalous": torch.tensor([bool(s.get("anomalous", False)) for s in samples], dtype=torch.bool),
        "sources": [str(s.get("source", "")) for s in samples],
    }
    return processor(batch) if processor is not None else batch
