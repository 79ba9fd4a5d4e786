"""The training objective (paper §3.2, Eqs. 9–11): token cross-entropy plus, per anchor, BCE and Dice.

The relative heads are a two-way softmax, so P_ano = sigmoid(l_ano - l_nor): both are computed from
logit differences, which keeps BCE finite where a probability saturates. The [NOR] target is the
complement of the anomaly mask. Dice is smoothed so that a normal image (empty mask) has a finite loss
that is minimised by predicting nothing.

Every part is a mean over the *samples* of the batch of a per-sample value (a sample without a mask,
e.g. VQA, contributes zero segmentation loss; its answer's tokens are averaged within the sample).
So a global batch split into micro-batches or over processes gives exactly the gradient of the whole
batch, whatever the answers' lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

BCE_WEIGHT = 0.5
DICE_WEIGHT = 2.0
DICE_SMOOTH = 1.0
IMAGE_TOPK = 0.001
NORMAL_TOPK = 0.01


def dice_loss(logits: Tensor, target: Tensor, smooth: float = DICE_SMOOTH) -> Tensor:
    """1 - (2|P∩M| + s) / (|P| + |M| + s), one value per image (B,)."""
    prob = logits.sigmoid().flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(-1)
    return 1 - (2 * inter + smooth) / (prob.sum(-1) + target.sum(-1) + smooth)


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy averaged over each image's pixels (B,)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(-1)


def _hottest(flat: Tensor, topk: float) -> Tensor:
    """The `topk` share (at least one) of each row's highest values, (B, k)."""
    return flat.topk(max(1, round(topk * flat.shape[1])), dim=1).values


def image_loss(logits: Tensor, target: Tensor, topk: float = IMAGE_TOPK) -> Tensor:
    """BCE of each image's decision logit, the mean of its top `topk` share of pixel logits, against
    "the mask is not empty" (B,).

    Not in the paper: the decision (anomalous = any pixel above 0.5) is a max over the map, and the pixel
    losses barely see it. On a good image a few confident pixels cost a pixel-mean BCE almost nothing and
    the smoothed Dice little more, yet each one flags the whole image. This term charges them at the
    image's weight. The top-k mean instead of the max spreads the gradient over more than one pixel.
    """
    score = _hottest(logits.flatten(1), topk).mean(-1)
    label = (target.flatten(1) > 0.5).any(-1).float()
    return F.binary_cross_entropy_with_logits(score, label, reduction="none")


def normal_loss(logits: Tensor, target: Tensor, topk: float = NORMAL_TOPK) -> Tensor:
    """BCE against "normal" of each good image's hottest `topk` share of pixels (B,); 0 where the mask
    is not empty.

    Not in the paper. The pixels that flag a good image are few and confident. The pixel-mean BCE spreads
    their cost over every pixel of the image, and the Dice of an empty mask, 1 - 1/(ΣP + 1), saturates once
    a few pixels fire and reaches them only through the sigmoid's vanishing slope. This term charges the
    hottest pixels of a good image at the image's weight. Unlike `image_loss` it leaves anomalous images to
    the paper's losses: pushing up the peak of a defective image's map also pushes up whatever false
    positive happens to be its peak.
    """
    empty = ~(target.flatten(1) > 0.5).any(-1)
    return F.softplus(_hottest(logits.flatten(1), topk)).mean(-1) * empty.float()


def defect_loss(logits: Tensor, target: Tensor, topk: float = NORMAL_TOPK) -> Tensor:
    """BCE against "anomalous" of the hottest pixels inside each defect's mask (B,); 0 for a good image.

    Not in the paper. The counterpart of `normal_loss`: that term lowers P on good images and, since
    the maps rank good and defective images alike, on defective ones too, until their masks come back
    empty. This one asks that some pixel of every defect stay above 0.5, on the pixels of the defect
    itself, not on the map's peak wherever it lies (as `image_loss` does). The `topk` share is of the
    image's pixels, capped at the defect's own size.
    """
    inside = target.flatten(1) > 0.5
    hottest = _hottest(logits.flatten(1).masked_fill(~inside, float("-inf")), topk)
    k = hottest.shape[1]
    counted = torch.arange(k, device=hottest.device) < inside.sum(-1, keepdim=True).clamp(max=k)
    per_pixel = F.softplus(-hottest.masked_fill(~counted, 0.0)) * counted
    return per_pixel.sum(-1) / counted.sum(-1).clamp(min=1) * inside.any(-1).float()


def text_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy of the answer (labels != -100): the mean over samples of each sample's
    mean over its answer tokens; a sample without an answer contributes zero."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    per_token = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none")
    counts = (shift_labels != -100).sum(-1)
    per_sample = per_token.sum(-1) / counts.clamp(min=1)
    return per_sample.sum() / logits.shape[0]


@dataclass
class LossParts:
    """The total and each named part, kept apart for logging."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def segmentation_losses(seg_logits: Tensor | None, nor_logits: Tensor | None, ano_logits: Tensor | None,
                        masks: Tensor, bce_weight: float = BCE_WEIGHT, dice_weight: float = DICE_WEIGHT,
                        weights: Tensor | None = None, image_weight: float = 0.0,
                        image_topk: float = IMAGE_TOPK, normal_weight: float = 0.0,
                        normal_topk: float = NORMAL_TOPK, defect_weight: float = 0.0) -> dict[str, Tensor]:
    """Per-anchor BCE and Dice for the heads that exist (the model's variant decides which), and the
    optional terms on the [SEG] and [ANO] maps, whose union of pixels above 0.5 is the decision: with
    `image_weight` > 0 the image-level term (`image_loss`), with `normal_weight` > 0 the good-image term
    (`normal_loss`), with `defect_weight` > 0 its counterpart on defects (`defect_loss`, same `normal_topk`).

    `weights` (B,) is 1 for samples with a mask to learn from and 0 otherwise; parts are divided by B.
    """
    masks = masks.float()
    weights = torch.ones(masks.shape[0], device=masks.device) if weights is None else weights.float()
    batch = masks.shape[0]
    heads: dict[str, tuple[Tensor, Tensor]] = {}
    if seg_logits is not None:
        heads["seg"] = (seg_logits.float(), masks)
    if ano_logits is not None and nor_logits is not None:
        diff = ano_logits.float() - nor_logits.float()
        heads["ano"] = (diff, masks)
        heads["nor"] = (-diff, 1 - masks)
    # The optional terms act on the decision maps only; [NOR]'s map is the complement of [ANO]'s.
    optional = [(term, weight, loss, topk) for term, weight, loss, topk in (
        ("image", image_weight, image_loss, image_topk),
        ("normal", normal_weight, normal_loss, normal_topk),
        ("defect", defect_weight, defect_loss, normal_topk)) if weight > 0]
    out: dict[str, Tensor] = {}
    for name, (logits, target) in heads.items():
        out[f"bce_{name}"] = bce_weight * (bce_loss(logits, target) * weights).sum() / batch
        out[f"dice_{name}"] = dice_weight * (dice_loss(logits, target) * weights).sum() / batch
        for term, weight, loss, topk in optional if name != "nor" else ():
            out[f"{term}_{name}"] = weight * (loss(logits, target, topk) * weights).sum() / batch
    return out


def total_loss(text: Tensor, seg_parts: dict[str, Tensor]) -> LossParts:
    parts = {"text_ce": text, **seg_parts}
    total = text + sum(seg_parts.values(), torch.zeros((), device=text.device))
    return LossParts(total, parts)
