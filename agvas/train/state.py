"""Resumable training state without pickles: tensors in safetensors, everything else in JSON.

A state folder holds the trainable weights, the optimiser's moments, the scheduler's counters, every
RNG state and the step. It is written to a temporary folder and renamed, so a run killed at any moment
resumes from the last complete state and — on CPU — ends bit-for-bit where an uninterrupted run ends.
DeepSpeed partitions the optimiser across processes; with it, accelerate's own collective save_state and
load_state write and read `state-<step>/deepspeed/`, beside the same state.json. Both ways sit behind
`save_state`/`load_state`, so the training loop does not need to know which one runs.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from agvas.io import DataError, atomic_folder, atomic_write_json, read_json

STATE_PREFIX = "state-"
TEMP_PREFIX = f".{STATE_PREFIX}"  # save_state's half-written folders: `.state-<step>.<random>.tmp`
DEEPSPEED_DIR = "deepspeed"


class StateError(ValueError):
    """A training state that cannot be read back; the message names the state folder and the file."""


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


def _uses_deepspeed(accelerator: Any) -> bool:
    if accelerator is None:
        return False
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def save_state(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, extra: dict[str, Any] | None = None,
               keep: int = 2, accelerator: Any = None) -> Path | None:
    """Write `folder/state-<step>` atomically and drop all but the newest `keep` states.

    With an `accelerator`, every process of the run calls this at the same step: under DeepSpeed each one
    writes its shard of the partitioned optimiser (accelerate's save_state) and the main process adds
    state.json; otherwise the main process alone writes the folder (others return None) from the torch
    optimiser inside accelerate's wrapper.
    """
    if accelerator is not None:
        accelerator.wait_for_everyone()
        if _uses_deepspeed(accelerator):
            target = folder / f"{STATE_PREFIX}{step:08d}"
            accelerator.save_state(str(target / DEEPSPEED_DIR))
            if accelerator.is_main_process:
                atomic_write_json(target / "state.json", {"step": step, "scheduler": scheduler.state_dict(),
                                                          "extra": extra or {}})
            return target
        if not accelerator.is_main_process:
            return None
        optimizer = getattr(optimizer, "optimizer", optimizer)
    final = folder / f"{STATE_PREFIX}{step:08d}"
    with atomic_folder(final) as tmp:
        weights = {n: p.detach().contiguous().cpu() for n, p in _trainable(model).items()}
        save_file(weights, str(tmp / "weights.safetensors"))
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        meta = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta,
                "extra": extra or {}}
        atomic_write_json(tmp / "state.json", meta)
    for old in sorted(folder.glob(f"{STATE_PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_temps(folder)
    return final


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp folders of saves that a kill interrupted (GBs each with real models).

    Only one process of a run writes states, and it calls this when no save of its own is under way
    (at the start, and after each save), so every `.state-*` folder found is a dead one.
    """
    stale = sorted(p for p in folder.glob(f"{TEMP_PREFIX}*") if p.is_dir()) if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def saved_states(folder: Path) -> list[Path]:
    """The complete-looking states in `folder`, newest first (temp folders are never among them)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob(f"{STATE_PREFIX}*") if (p / "state.json").is_file()), reverse=True)


def latest_state(folder: Path) -> Path | None:
    states = saved_states(folder)
    return states[0] if states else None


def read_state_meta(path: Path, keys: tuple[str, ...] = ("step", "scheduler", "extra")) -> dict[str, Any]:
    """`path/state.json` as a dict holding `keys`, or a StateError naming the folder and the file."""
    file = path / "state.json"
    try:
        meta = read_json(file)
    except DataError as err:
        raise StateError(f"state {path}: {file.name} is unreadable ({err})") from None
    missing = [k for k in keys if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise StateError(f"state {path}: {file.name} lacks {', '.join(missing)}")
    return meta


def _read_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / name))
    except (OSError, SafetensorError) as err:
        raise StateError(f"state {path}: {name} is unreadable ({err})") from None


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, accelerator: Any = None) -> dict[str, Any]:
    """Restore everything `save_state` wrote; returns its JSON (step, extra).

    Every file is read and checked before anything is restored, so a truncated or garbled state leaves
    the model as it was and the caller can try an older one; errors are StateErrors naming the file.
    Under DeepSpeed (`accelerator` given) every process calls this after accelerate's prepare, since the
    partitioned optimiser exists only then; before it, `read_state_meta` finds the state and its step.
    """
    if _uses_deepspeed(accelerator):
        meta = read_state_meta(path)
        accelerator.load_state(str(path / DEEPSPEED_DIR))
        scheduler.load_state_dict(meta["scheduler"])
        return meta
    meta = read_state_meta(path, ("step", "optimizer", "scheduler", "rng", "extra"))
    weights = _read_tensors(path, "weights.safetensors")
    opt_tensors = _read_tensors(path, "optimizer.safetensors")
    rng_tensors = _read_tensors(path, "rng.safetensors")
    params = _trainable(model)
    if set(weights) != set(params):
        missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        raise StateError(f"state {path}: weights.safetensors does not match this model's trainable parameters "
                         f"(missing {missing[:3]}, extra {extra[:3]})")
    wrong = [n for n, p in params.items() if weights[n].shape != p.shape]
    if wrong:
        raise StateError(f"state {path}: weights.safetensors has other shapes than this model ({wrong[:3]})")
    lacking = [k for k in ("torch", "numpy_keys") if k not in rng_tensors]
    if lacking:
        raise StateError(f"state {path}: rng.safetensors lacks {', '.join(lacking)}")
    try:
        opt_state = _optimizer_state(opt_tensors, meta["optimizer"])
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise StateError(f"state {path}: optimizer.safetensors and state.json do not fit together "
                         f"({err!r})") from None
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name])
    try:
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(meta["scheduler"])
        set_rng_state(rng_tensors, meta["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise StateError(f"state {path}: the optimiser, scheduler or RNG state in optimizer.safetensors / "
                         f"rng.safetensors / state.json does not fit this run ({err})") from None
    return meta


def resume_latest(folder: Path, load: Callable[[Path], dict[str, Any]],
                  warn: Callable[[str], None]) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest intact state in `folder` with `load`, skipping corrupt ones with a warning.

    Returns None when the folder holds no state at all; raises StateError when it holds states but none
    of them can be read, since starting over silently would throw away the run's work.
    """
    states = saved_states(folder)
    errors = []
    for path in states:
        try:
            return path, load(path)
        except StateError as err:
            errors.append(str(err))
            warn(f"skipping a corrupt training state: {err}")
    if errors:
        raise StateError(f"no intact training state in {folder}; delete the folder to start over. "
                         + "; ".join(errors))
    return None
