"""The training recipe as a YAML file: model, data, optimisation, schedule and bookkeeping.

The `data:` section is `agvas.data.recipe.DataSection` (data assembly lives with the data); it is
re-exported here, so the recipe's sections are all found in one place.

Every field has the paper's (or LISA's) default; a YAML file only states what differs. Unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agvas.data.recipe import DataSection

__all__ = ["DataSection", "ModelSection", "OptimSection", "TrainConfig", "load_train_config"]


@dataclass
class ModelSection:
    preset: str = "tiny"
    variant: str = "agvas"
    lmm: str | None = None
    sam: str | None = None
    lora_rank: int | None = None
    image_weight: float | None = None
    """The image-level decision term's weight (`agvas.model.losses.image_loss`); None: the preset's (0)."""
    normal_weight: float | None = None
    """The good-image term's weight (`agvas.model.losses.normal_loss`); None: the preset's (0)."""
    defect_weight: float | None = None
    """Its counterpart's on defects (`agvas.model.losses.defect_loss`); None: the preset's (0)."""
    fine_branch: bool | None = None
    """Stride-4 pixel detail for the mask heads (`agvas.model.fine`); None: the preset's (off). With
    `init_from`, True adds the branch to the loaded checkpoint (as a no-op to start from)."""
    self_reference: bool | None = None
    """Each patch's rarity within its image as a pixel-embedding cue (`agvas.model.reference`); None: the
    preset's (off). With `init_from`, True adds it to the loaded checkpoint (as a no-op to start from)."""
    init_from: str | None = None
    """An AG-VAS checkpoint folder to start from instead of fresh weights (a second training stage).
    Its architecture is kept, but for `fine_branch` and `self_reference`; `preset`/`variant` must name it,
    and only the loss weights above apply."""


@dataclass
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    fine_branch_from: int = 0
    """With the fine branch: the step from which it learns. Before it its learning rate is 0, so it stays the
    no-op it starts as while the encoders and AGMD warm up on patch features (trained from step 0 it cost
    the held-out synthetic set 12 AP; README, "Real images")."""


@dataclass
class TrainConfig:
    out: str = "runs/agvas"
    seed: int = 0
    steps: int = 1000
    micro_batch: int = 2
    global_batch: int = 80
    """Samples per optimiser step over all processes; gradient accumulation makes up the rest."""
    mixed_precision: str = "auto"
    """auto: bf16 on CUDA, fp32 on CPU; or no / bf16 / fp16."""
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 10
    time_limit_minutes: float | None = None
    """Stop (after saving) once this much wall time has passed: a budgeted run ends cleanly."""
    deepspeed: str | None = None
    """A DeepSpeed JSON config (configs/deepspeed/zero2.json or zero3.json); use with `accelerate launch`."""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, raw: dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    values = {}
    for name, value in raw.items():
        sub = {"model": ModelSection, "data": DataSection, "optim": OptimSection}.get(name)
        if cls is TrainConfig and sub is not None:
            value = _build(sub, value or {}, f"{where}.{name}")
        elif name == "betas":
            value = tuple(value)
        else:
            value = _scalar(value, known[name].type, f"{where}.{name}")
        values[name] = value
    return cls(**values)


def _scalar(value: Any, annotation: Any, where: str) -> Any:
    """A number or flag as its field declares it, or an error naming the key.

    Why: YAML 1.1 reads `3e-4` (no dot) as a string, which used to reach the optimiser and fail deep in
    torch; a string where a count belongs, or a number where a flag belongs, fails just as late.
    """
    kind = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace(" ", "")
    optional = kind.endswith("|None")
    kind = kind.removesuffix("|None")
    if kind not in ("float", "int", "bool") or (value is None and optional):
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None and kind == "float":
            return number
        if number is not None and number.is_integer():
            return int(number)
    raise ValueError(f"{where}: expected {'an integer' if kind == 'int' else 'a ' + kind}, got {value!r}")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe; `overrides` are dotted keys (`optim.lr`) applied on top."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} not found (presets live in configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    cfg = _build(TrainConfig, raw, str(path))
    if cfg.global_batch % cfg.micro_batch:
        raise ValueError(f"{path}: global_batch {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch}")
    return cfg


def datasets_seen(cfg: TrainConfig) -> list[str]:
    """Every image source the recipe trains on, for training.json: a shipped checkpoint must say which sets
    (and so which licences) it saw. A second stage adds what its `init_from` checkpoint saw (loop.py)."""
    d = cfg.data
    seen = ["synthetic (agvas.data.synth, procedural textures)"]
    if d.textures:
        seen.append(f"textures: {d.textures}")
    seen += [f"good photographs (synthetic defects painted on): {root}" for root in d.photos]
    for entry in d.anomaly_datasets:
        seen.append(f"anomaly set: {entry if isinstance(entry, str) else entry['root']}")
    seen += [f"{s.get('kind', 'source')}: {s.get('root')}" for s in d.sources]
    seen += [f"referring segmentation: {root}" for root in d.lisa_folders]
    if d.camvid:
        seen.append(f"camvid: {d.camvid}")
    if d.records:
        seen.append(f"instruction records: {d.records}")
    return seen
