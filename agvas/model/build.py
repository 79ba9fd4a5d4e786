"""Making a model from a preset name: the one entry point the CLI, the trainer and the tests share."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from agvas.model.agvas import AGVASModel
from agvas.model.config import preset_config
from agvas.model.tiny import write_tiny_backbones


def build_model(preset: str = "tiny", variant: str = "agvas", *, lmm: str | None = None, sam: str | None = None,
                backbone_dir: str | Path | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float32, **overrides) -> AGVASModel:
    """A fresh (untrained) AG-VAS model.

    For `tiny`, random backbones are written to `backbone_dir` (a temporary folder if not given) and
    loaded back from there, exactly as a real checkpoint would be. For real presets, `lmm`/`sam` point
    at local folders (or hub ids when online) and override the preset's defaults; `overrides` set
    other config fields (None leaves the preset's value).
    """
    config = preset_config(preset, variant, lmm=lmm, sam=sam, **overrides)
    base = None
    if preset == "tiny" and lmm is None and sam is None:
        base = Path(backbone_dir) if backbone_dir is not None else Path(tempfile.mkdtemp(prefix="agvas-tiny-"))
        if not (base / "lmm" / "config.json").exists():
            write_tiny_backbones(base, seed=seed)
    torch.manual_seed(seed)
    return AGVASModel.build(config, base_dir=base, dtype=dtype)
