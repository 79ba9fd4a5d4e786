"""Resumable training state without pickles: tensors in safetensors, everything else in JSON.

A state folder holds the trainable weights, the optimiser's moments, the scheduler's counters, every
RNG state and the step. It is written to a temporary folder and renamed, so a run killed at any moment
resumes from the last complete state and — on CPU — ends bit-for-bit where an uninterrupted run ends.
(DeepSpeed partitions the optimiser across processes; with it, accelerate's own save_state is used.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE_PREFIX = "state-"


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in {**tensors, **meta["scalars"]}.items():
        idx, slot = key.split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, py_gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(py_state), py_gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = meta["python"]
    random.setstate((version, tuple(py_state), py_gauss))


def save_state(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, extra: dict[str, Any] | None = None,
               keep: int = 2) -> Path:
    """Write `folder/state-<step>` atomically and drop all but the newest `keep` states."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{STATE_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=folder))
    try:
        weights = {n: p.detach().contiguous().cpu() for n, p in _trainable(model).items()}
        save_file(weights, str(tmp / "weights.safetensors"))
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        meta = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta,
                "extra": extra or {}}
        (tmp / "state.json").write_text(json.dumps(meta))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(folder.glob(f"{STATE_PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_state(folder: Path) -> Path | None:
    states = sorted(p for p in folder.glob(f"{STATE_PREFIX}*") if (p / "state.json").is_file())
    return states[-1] if states else None


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Restore everything `save_state` wrote; returns its JSON (step, extra)."""
    meta = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "weights.safetensors"))
    params = _trainable(model)
    if set(weights) != set(params):
        missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        raise ValueError(f"{path}: the saved trainable parameters do not match this model "
                         f"(missing {missing[:3]}, extra {extra[:3]})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    optimizer.load_state_dict(_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    set_rng_state(load_file(str(path / "rng.safetensors")), meta["rng"])
    return meta
