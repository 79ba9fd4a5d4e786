"""Writing and reading AG-VAS checkpoint folders, never leaving half of one behind.

A checkpoint is assembled in a hidden sibling folder and renamed into place, so an interrupted save
leaves the previous checkpoint intact and a reader never sees a partial one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from agvas.model.config import AGVASConfig

if TYPE_CHECKING:
    from agvas.model.agvas import AGVASModel

WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"


def _copy_image_processor(src: str, dst: Path) -> None:
    from transformers import AutoImageProcessor

    # No processor config at the source: the defaults apply on load, as they did here.
    with contextlib.suppress(OSError, ValueError):
        AutoImageProcessor.from_pretrained(src).save_pretrained(dst)


def save_checkpoint(model: AGVASModel, folder: str | Path) -> Path:
    from agvas.model.agvas import save_added_weights

    folder = Path(folder)
    if not model.backbone_paths and not model.config.train_backbones:
        # Its config names hub ids whose real weights are not the ones this model holds.
        raise ValueError("this model's frozen backbones were built in memory (random-init) and are not on disk: "
                         "its checkpoint could not be loaded with the same backbones. Build it with "
                         "build_model(..., random_init=True, backbone_dir=DIR) to write them first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        config = model.config
        if config.train_backbones:
            # The backbones were trained: they are part of the checkpoint, saved in full.
            lmm_dir, sam_dir = tmp / "lmm", tmp / "sam"
            model.base_lmm.save_pretrained(lmm_dir)
            model.tokenizer.save_pretrained(lmm_dir)
            _copy_image_processor(model.backbone_paths.get("lmm", config.lmm), lmm_dir)
            model._sam[0].save_pretrained(sam_dir)
            _copy_image_processor(model.backbone_paths.get("sam", config.sam), sam_dir)
            config = replace(config, lmm="lmm", sam="sam")
        elif hasattr(model.lmm, "peft_config"):
            model.lmm.save_pretrained(tmp / ADAPTER_DIR)
        config.save(tmp)
        model.tokenizer.save_pretrained(tmp)
        save_added_weights(model, tmp / WEIGHTS_FILE)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_checkpoint(cls: type[AGVASModel], folder: str | Path, dtype: torch.dtype = torch.float32) -> AGVASModel:
    from agvas.model.agvas import load_added_weights

    folder = Path(folder)
    config = AGVASConfig.load(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: {WEIGHTS_FILE} is missing; the checkpoint is incomplete")
    adapter = folder / ADAPTER_DIR
    model = cls.build(config, base_dir=folder, dtype=dtype, adapter_dir=adapter if adapter.is_dir() else None)
    load_added_weights(model, weights)
    return model
