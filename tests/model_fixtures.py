"""Shared builders for the model tests: tiny real-class backbones written to disk once per session."""

from __future__ import annotations

from pathlib import Path

import torch

from agvas.anchors import DIRECT_INSTRUCTION, IMAGE_PLACEHOLDER, direct_answer
from agvas.model.agvas import AGVASModel
from agvas.model.config import AGVASConfig, preset_config


def conversation(anchors=("[NOR]", "[ANO]", "[SEG]"), question: str = DIRECT_INSTRUCTION) -> list[dict]:
    return [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}"},
            {"role": "assistant", "content": direct_answer(anchors)}]


def square_mask(size: int = 64, lo: int = 20, hi: int = 40) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[lo:hi, lo:hi] = 1
    return m


def batch_for(model: AGVASModel, n: int = 2, size: int = 64, seed: int = 0, masks: torch.Tensor | None = None):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    if masks is None:
        masks = torch.stack([square_mask(size) if i % 2 == 0 else torch.zeros(size, size) for i in range(n)])
    return model.processor({"images": images, "conversations": [conversation(model.config.anchors)] * n,
                            "masks": masks, "has_mask": torch.ones(n, dtype=torch.bool)})


def frozen_config(backbones: Path, variant: str = "agvas", lmm: str = "lmm") -> AGVASConfig:
    """The real presets' training policy (frozen backbones, LoRA, SAM-initialised decoder) on tiny weights."""
    return preset_config("llava-ov-0.5b", variant, lmm=str(backbones / lmm), sam=str(backbones / "sam"),
                         lora_rank=4, spam_heads=4, decoder_heads=4, decoder_mlp_dim=256)


def build(config: AGVASConfig, base: Path | None = None, seed: int = 0) -> AGVASModel:
    torch.manual_seed(seed)
    return AGVASModel.build(config, base_dir=base).eval()
