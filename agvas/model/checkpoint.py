"""Writing and reading AG-VAS checkpoint folders, never leaving half of one behind.

A checkpoint is assembled in a hidden sibling folder and renamed into place (`agvas.io.atomic_folder`),
so an interrupted save leaves the previous checkpoint intact and a reader never sees a partial one.
The model is seen through `Checkpointable`, the few members a checkpoint needs, so this module sits
below the network (`agvas.model.agvas` saves and loads itself through it, not the other way round).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from agvas.io import atomic_folder
from agvas.model.config import AGVASConfig

WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"


class Checkpointable(Protocol):
    """What a checkpoint reads from and writes into a model (AGVASModel has it all)."""

    config: AGVASConfig
    lmm: nn.Module
    tokenizer: Any
    backbone_paths: dict[str, str]
    _sam: list[Any]

    @classmethod
    def build(cls, config: AGVASConfig, base_dir: str | Path | None = None, dtype: torch.dtype = torch.float32,
              adapter_dir: str | Path | None = None) -> Any: ...

    @property
    def base_lmm(self) -> nn.Module: ...

    def added_modules(self) -> dict[str, nn.Module]: ...


M = TypeVar("M", bound=Checkpointable)


def _copy_image_processor(src: str, dst: Path) -> None:
    from transformers import AutoImageProcessor

    # No processor config at the source: the defaults apply on load, as they did here.
    with contextlib.suppress(OSError, ValueError):
        AutoImageProcessor.from_pretrained(src).save_pretrained(dst)


def save_checkpoint(model: Checkpointable, folder: str | Path) -> Path:
    """Write `folder` whole or not at all (see the module's docstring for its layout)."""
    folder = Path(folder)
    if not model.backbone_paths and not model.config.train_backbones:
        # Its config names hub ids whose real weights are not the ones this model holds.
        raise ValueError("this model's frozen backbones were built in memory (random-init) and are not on disk: "
                         "its checkpoint could not be loaded with the same backbones. Build it with "
                         "build_model(..., random_init=True, backbone_dir=DIR) to write them first")
    with atomic_folder(folder) as tmp:
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
    return folder


def load_checkpoint(cls: type[M], folder: str | Path, dtype: torch.dtype = torch.float32) -> M:
    """`cls.build` from the folder's config and backbones, then the weights AG-VAS added."""
    folder = Path(folder)
    config = AGVASConfig.load(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: {WEIGHTS_FILE} is missing; the checkpoint is incomplete")
    adapter = folder / ADAPTER_DIR
    model = cls.build(config, base_dir=folder, dtype=dtype, adapter_dir=adapter if adapter.is_dir() else None)
    load_added_weights(model, weights)
    return model


def load_added_weights(model: Checkpointable, path: Path) -> None:
    """model.safetensors into the added modules, each strictly: a mismatch is a wrong checkpoint."""
    state = load_file(str(path))
    for name, module in model.added_modules().items():
        sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        if not sub:
            raise ValueError(f"{path}: no weights for {name}; the checkpoint does not match its config")
        module.load_state_dict(sub, strict=True)


def save_added_weights(model: Checkpointable, path: Path) -> None:
    """The added modules' weights, prefixed by module name, on the CPU, in one safetensors file."""
    state = {f"{name}.{k}": v.detach().contiguous().cpu()
             for name, m in model.added_modules().items() for k, v in m.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "config": model.config.name})
