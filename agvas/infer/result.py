"""What one image's segmentation returns, and the step from the decoder's low-res logits to it.

Maps are brought back to the input's original size with SAM's post-processing (upsample to the padded
input frame, crop the resized region, resize to the original), one image at a time because images of
one batch may differ in size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from agvas.model.agvas import AGVASModel, fuse
from agvas.model.decoder import DecoderOutput
from agvas.modes import DIRECT_MODE
from agvas.verdict import Verdict, text_verdict

NO_ANCHORS_NOTE = "the model's answer holds no complete set of anchor tokens, so no mask was decoded (mask empty)"


@dataclass
class SegmentationResult:
    """One image's output. Maps are float32 HxW at the input's original size; the mask is bool HxW."""

    mask: np.ndarray
    anomaly_map: np.ndarray
    """P = α·P_seg + (1−α)·P_ano (paper Eq. 8); all zeros when no anchors were produced."""
    seg_map: np.ndarray | None
    """P_seg from the absolute anchor [SEG]; None where the variant has no [SEG] or no anchors were produced."""
    ano_map: np.ndarray | None
    """P_ano from the relative anchors [NOR]/[ANO]; None where the variant lacks them or none were produced."""
    text: str
    score: float
    """Image-level anomaly score: the maximum of P."""
    anomalous: bool
    """The decision: the mask is non-empty."""
    mode: str
    anchors_found: bool
    source: str | None = None
    note: str | None = None
    threshold: float = 0.5
    """The cut on P that made the mask (`agvas.infer.decision`)."""
    min_area: float = 0.0
    """Masks covering less than this share of the image were emptied (0: the paper's rule)."""

    @property
    def area_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def text_verdict(self) -> Verdict | None:
        """What a generated answer says (`agvas.verdict`); None in direct mode, whose answer is fixed, and
        where the text decides nothing."""
        return None if self.mode == DIRECT_MODE else text_verdict(self.text)

    @property
    def text_agrees(self) -> bool | None:
        """Whether the text's verdict is the mask's: False is a contradiction a reader should see (the
        text says "no defect" beside a non-empty mask, or the reverse); None where the text decides nothing."""
        verdict = self.text_verdict
        return None if verdict is None else (verdict == "anomalous") == self.anomalous

    def summary(self) -> dict[str, Any]:
        """The JSON-able part (no arrays)."""
        return {"path": self.source, "text": self.text, "score": round(self.score, 6), "anomalous": self.anomalous,
                "area_fraction": round(self.area_fraction, 6), "mode": self.mode,
                "anchors_found": self.anchors_found, "threshold": self.threshold, "min_area": self.min_area,
                "text_verdict": self.text_verdict, "text_agrees": self.text_agrees,
                **({"note": self.note} if self.note else {})}


def _numpy(x: Tensor | None) -> np.ndarray | None:
    return None if x is None else x[0].float().cpu().numpy().astype(np.float32, copy=False)


def build_results(model: AGVASModel, decoded: DecoderOutput, found: Tensor, resized_sizes: Tensor,
                  original_sizes: Tensor, texts: list[str], mode: str,
                  sources: list[str | None]) -> list[SegmentationResult]:
    """Per image: upsample/crop/resize each head's logits, fuse (Eq. 8), threshold, package."""
    results = []
    heads = (decoded.seg_logits, decoded.nor_logits, decoded.ano_logits)
    for i in range(len(texts)):
        h, w = (int(v) for v in original_sizes[i])
        if not bool(found[i]):
            results.append(SegmentationResult(
                mask=np.zeros((h, w), dtype=bool), anomaly_map=np.zeros((h, w), dtype=np.float32), seg_map=None,
                ano_map=None, text=texts[i], score=0.0, anomalous=False, mode=mode, anchors_found=False,
                source=sources[i], note=NO_ANCHORS_NOTE, threshold=model.config.threshold))
            continue
        seg, nor, ano = (model.upsample(x[i:i + 1].float(), resized_sizes[i:i + 1], (h, w)) if x is not None
                         else None for x in heads)
        p, p_seg, p_ano = fuse(seg, nor, ano, model.config.fusion_alpha)
        mask = model.binary_mask(p)
        results.append(SegmentationResult(
            mask=mask[0].cpu().numpy(), anomaly_map=_numpy(p), seg_map=_numpy(p_seg), ano_map=_numpy(p_ano),
            text=texts[i], score=float(p.max()), anomalous=bool(mask.any()), mode=mode, anchors_found=True,
            source=sources[i], threshold=model.config.threshold))
    return results

