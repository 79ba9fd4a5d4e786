"""The trainer's periodic check: direct segmentation of the held-out synthetic categories.

Per held-out family the protocol's figures (pixel AP, F1-max, IoU_ano, IoU_nor) are computed and
averaged over families, exactly as for a benchmark; the direct answer is teacher-forced (one forward
pass), which is also how inference runs direct mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from agvas.anchors import DIRECT_INSTRUCTION, IMAGE_PLACEHOLDER, direct_answer
from agvas.evaluate.metrics import CategoryAccumulator, mean_over_categories
from agvas.model.agvas import AGVASModel
from agvas.train.config import DataSection
from agvas.train.data import HeldOutSample, heldout_samples

REPORTED = ("ap", "f1_max", "iou_ano", "iou_nor")


@torch.inference_mode()
def direct_maps(model: AGVASModel, images: Sequence, batch_size: int = 8) -> list[torch.Tensor]:
    """P for each image (same size batch), by one teacher-forced forward pass per batch."""
    conv = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{DIRECT_INSTRUCTION}"},
            {"role": "assistant", "content": direct_answer(model.config.anchors)}]
    device = next(model.parameters()).device
    maps: list[torch.Tensor] = []
    for i in range(0, len(images), batch_size):
        chunk = [torch.as_tensor(im).permute(2, 0, 1) for im in images[i:i + batch_size]]
        batch = model.processor({"images": chunk, "conversations": [conv] * len(chunk)})
        batch = {k: v.to(device) for k, v in batch.items()}
        size = tuple(chunk[0].shape[-2:])
        out = model(**batch, masks=torch.zeros(len(chunk), *size, device=device))
        p, _, _ = model.probability_maps(out)
        maps += list(p.float().cpu())
    return maps


def evaluate_samples(model: AGVASModel, samples: Sequence[HeldOutSample], batch_size: int = 8) -> dict[str, float]:
    accs: dict[str, CategoryAccumulator] = {}
    maps = direct_maps(model, [s.image for s in samples], batch_size)
    for s, p in zip(samples, maps, strict=True):
        acc = accs.setdefault(s.cls_name, CategoryAccumulator(threshold=model.config.threshold))
        acc.add(p.numpy(), s.mask, (p > model.config.threshold).numpy())
    mean = mean_over_categories({c: a.summarise() for c, a in accs.items()})
    return {k: float(mean[k]) for k in REPORTED}


def make_heldout_evaluator(cfg: DataSection, n: int, seed: int) -> Callable[[AGVASModel, int], dict[str, float]]:
    """Samples are drawn once, so every evaluation of a run sees the same images."""
    samples = heldout_samples(cfg, n, seed)

    def evaluate(model: AGVASModel, step: int) -> dict[str, float]:
        return evaluate_samples(model, samples)

    return evaluate
