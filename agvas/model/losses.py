"""The training objective (paper §3.2, Eqs. 9–11): token cross-entropy plus, per anchor, BCE and Dice.

The relative heads are a two-way softmax, so P_ano = sigmoid(l_ano - l_nor): both are computed from
logit differences, which keeps BCE finite where a probability saturates. The [NOR] target is the
complement of the anomaly mask. Dice is smoothed so that a normal image (empty mask) has a finite loss
that is minimised by predicting nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

BCE_WEIGHT = 0.5
DICE_WEIGHT = 2.0
DICE_SMOOTH = 1.0


def dice_loss(logits: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """1 - (2|P∩M| + s) / (|P| + |M| + s) per image, averaged over the batch."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(-1)
    return (1 - (2 * inter + smooth) / (prob.sum(-1) + target.sum(-1) + smooth)).mean()


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean binary cross-entropy over all pixels of all images."""
    return F.binary_cross_entropy_with_logits(logits, target)


def text_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy over the positions whose label is not -100 (the answer)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if not (shift_labels != -100).any():
        return shift_logits.sum() * 0.0
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=-100)


@dataclass
class LossParts:
    """The total and each named part, kept apart for logging."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def segmentation_losses(seg_logits: Tensor | None, nor_logits: Tensor | None, ano_logits: Tensor | None,
                        masks: Tensor, bce_weight: float = BCE_WEIGHT,
                        dice_weight: float = DICE_WEIGHT) -> dict[str, Tensor]:
    """Per-anchor BCE and Dice for the heads that exist (the model's variant decides which)."""
    masks = masks.float()
    heads: dict[str, tuple[Tensor, Tensor]] = {}
    if seg_logits is not None:
        heads["seg"] = (seg_logits.float(), masks)
    if ano_logits is not None and nor_logits is not None:
        diff = ano_logits.float() - nor_logits.float()
        heads["ano"] = (diff, masks)
        heads["nor"] = (-diff, 1 - masks)
    out: dict[str, Tensor] = {}
    for name, (logits, target) in heads.items():
        out[f"bce_{name}"] = bce_weight * bce_loss(logits, target)
        out[f"dice_{name}"] = dice_weight * dice_loss(logits, target)
    return out


def total_loss(text: Tensor, seg_parts: dict[str, Tensor]) -> LossParts:
    parts = {"text_ce": text, **seg_parts}
    total = text + sum(seg_parts.values(), torch.zeros((), device=text.device))
    return LossParts(total, parts)
