"""Making a model from a preset name: the one entry point the CLI, the trainer and the tests share."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from agvas.model.agvas import AGVASModel
from agvas.model.config import preset_config
from agvas.model.random_init import Overrides
from agvas.model.tiny import write_tiny_backbones


def build_model(preset: str = "tiny", variant: str = "agvas", *, lmm: str | None = None, sam: str | None = None,
                backbone_dir: str | Path | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float32, random_init: bool = False,
                device: str | torch.device | None = None, architecture_overrides: Overrides | None = None,
                **overrides) -> AGVASModel:
    """A fresh (untrained) AG-VAS model.

    For `tiny`, random backbones are written to `backbone_dir` (a temporary folder if not given) and
    loaded back from there, exactly as a real checkpoint would be. For real presets, `lmm`/`sam` point
    at local folders (or hub ids when online) and override the preset's defaults; `overrides` set
    other config fields (None leaves the preset's value).

    `random_init=True` builds a real preset from the shipped architecture facts with random weights and
    no download: on `device="meta"` without allocating anything (parameter tables of 7B/13B); with a
    `backbone_dir`, written there with `save_pretrained` and loaded back (so its checkpoints can be saved
    and loaded like any other); otherwise in memory on CPU. `architecture_overrides` shrink it for tests
    ({"lmm": {"text_config": {...}}, "sam": {"vision_config": {...}}}).
    """
    config = preset_config(preset, variant, lmm=lmm, sam=sam, **overrides)
    if random_init and preset != "tiny":
        if lmm is not None or sam is not None:
            raise ValueError("random_init builds the preset's own backbones; it takes no lmm/sam folders")
        return _random_model(config, backbone_dir, seed, dtype, device, architecture_overrides)
    base = None
    if preset == "tiny" and lmm is None and sam is None:
        base = Path(backbone_dir) if backbone_dir is not None else Path(tempfile.mkdtemp(prefix="agvas-tiny-"))
        if not (base / "lmm" / "config.json").exists():
            write_tiny_backbones(base, seed=seed)
    torch.manual_seed(seed)
    return AGVASModel.build(config, base_dir=base, dtype=dtype)


def _random_model(config, backbone_dir: str | Path | None, seed: int, dtype: torch.dtype,
                  device: str | torch.device | None, shrink: Overrides | None) -> AGVASModel:
    from agvas.model.random_init import random_backbones, write_random_backbones

    meta = device is not None and torch.device(device).type == "meta"
    if backbone_dir is not None and not meta:
        base = Path(backbone_dir).resolve()
        if not (base / "lmm" / "config.json").exists() or not (base / "sam" / "config.json").exists():
            write_random_backbones(config.lmm, config.sam, base, seed=seed, overrides=shrink)
        torch.manual_seed(seed)
        return AGVASModel.build(replace(config, lmm=str(base / "lmm"), sam=str(base / "sam")), dtype=dtype)
    torch.manual_seed(seed)
    where = "meta" if meta else "cpu"
    parts = random_backbones(config.lmm, config.sam, where, shrink)
    with torch.device(where):
        model = AGVASModel.assemble(config, parts.lmm, parts.sam, parts.tokenizer, parts.semantic_spec,
                                    parts.pixel_spec)
    return model.to(dtype)
