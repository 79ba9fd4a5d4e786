"""The training recipe as a YAML file: model, data, optimisation, schedule and bookkeeping.

Every field has the paper's (or LISA's) default; a YAML file only states what differs. Unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelSection:
    preset: str = "tiny"
    variant: str = "agvas"
    lmm: str | None = None
    sam: str | None = None
    lora_rank: int | None = None
    image_weight: float | None = None
    """The image-level decision term's weight (`agvas.model.losses.image_loss`); None: the preset's (0)."""
    init_from: str | None = None
    """An AG-VAS checkpoint folder to start from instead of fresh weights (a second training stage).
    Its architecture is kept; `preset`/`variant` must name it, and only the loss weights above apply."""


@dataclass
class DataSection:
    image_size: int = 256
    rates: dict[str, float] = field(default_factory=lambda: {"general": 2.0, "anomaly-instruct": 3.0,
                                                              "anomaly-seg": 4.0, "vqa": 1.0})
    textures: str | None = None
    """A folder of real texture classes (e.g. DTD) to paste defects on, besides the procedural families."""
    holdout_families: list[str] | None = None
    """None: the synthetic generator's default holdout (never trained on, used for held-out evaluation)."""
    holdout_defects: list[str] | None = None
    normal_fraction: float = 0.3
    anomaly_datasets: list[str | dict[str, Any]] = field(default_factory=list)
    """Real meta.json roots mixed into both anomaly sources beside the synthetic pool. Each is a root
    (all of its splits), or a mapping {root, splits: [train, test], weight: 1.0, classes: [...]}."""
    real_share: float = 0.5
    """With real sets given: the chance that an anomaly sample comes from them rather than the generator."""
    real_normal_rate: float | None = 0.5
    """The share of good images drawn from a real set that has both kinds (None: as the set has them)."""
    augment_real: bool = True
    """Crops, flips, quarter turns and lighting on real pairs (`agvas.data.augment`)."""
    camvid: str | None = None
    """A CamVid root: real-scene referring segmentation ("segment the road") in the general source."""
    camvid_share: float = 0.5
    """With `camvid`: its share of the general source (the rest stays procedural shapes)."""
    validation: list[str] = field(default_factory=list)
    """Real meta.json roots never trained on, evaluated (all splits) with the held-out check as `val_*`."""
    validation_images: int = 160
    records: str | None = None
    """A JSONL of LMM-written Anomaly-Instruct records (`agvas data annotate`); rule-based records otherwise."""
    lisa_folders: list[str] = field(default_factory=list)
    """LISA-style referring-segmentation folders for the general source (replacing the procedural one)."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Readers of the paper's training sources (`agvas.data.sources.registry.KINDS`), each {kind, root,
    weight, ...}: anomaly kinds join the real pool beside `anomaly_datasets` (at `real_share`), general kinds
    the general source, `llava-instruct` the VQA source, `anomaly-instruct` the Anomaly-Instruct source."""
    source_shares: dict[str, float] = field(default_factory=dict)
    """Per mixture source (general, vqa, anomaly-instruct) fed by `sources`: the share of its samples they
    give (default 1: they replace the stand-in; 0.5: half theirs, half the procedural/rule-based one)."""
    eval_images: int = 64
    num_workers: int = 0


@dataclass
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    grad_clip: float = 1.0


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
    dump_grads_at_step: int | None = None
    """Testing hook: write the synchronised gradients of that step to out/grads-<step>.safetensors."""

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
        values[name] = value
    return cls(**values)


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
    for entry in d.anomaly_datasets:
        seen.append(f"anomaly set: {entry if isinstance(entry, str) else entry['root']}")
    seen += [f"{s.get('kind', 'source')}: {s.get('root')}" for s in d.sources]
    seen += [f"referring segmentation: {root}" for root in d.lisa_folders]
    if d.camvid:
        seen.append(f"camvid: {d.camvid}")
    if d.records:
        seen.append(f"instruction records: {d.records}")
    return seen
