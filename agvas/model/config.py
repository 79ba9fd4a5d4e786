"""What an AG-VAS model is made of: backbones, anchors, module sizes, training policy — one JSON file.

Presets give the paper's backbones; variants are the switches of the paper's ablations (Table 3) and the
LISA-style baseline, so that every comparison is built, trained and measured by the same code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from agvas.anchors import ANCHOR_TOKENS, ANO, NOR, SEG
from agvas.io import atomic_write_bytes, read_json

CONFIG_FILE = "agvas_config.json"
ARCHITECTURE = "agvas"


@dataclass(frozen=True)
class AGVASConfig:
    lmm: str
    """LLaVA-family checkpoint: a folder (absolute, or relative to the AG-VAS checkpoint) or a hub id."""
    sam: str
    """SAM checkpoint (folder or hub id) providing the pixel encoder and, optionally, AGMD's initial weights."""
    anchors: tuple[str, ...] = ANCHOR_TOKENS
    use_spam: bool = True
    fusion_alpha: float = 0.5
    threshold: float = 0.5
    spam_heads: int = 8
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    init_decoder_from_sam: bool = True
    train_backbones: bool = False
    """True only for randomly initialised backbones (the tiny preset): the paper freezes them."""
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    bce_weight: float = 0.5
    dice_weight: float = 2.0
    image_weight: float = 0.0
    """The image-level decision term (`losses.image_loss`); 0 is the paper's objective."""
    image_topk: float = 0.001
    normal_weight: float = 0.0
    """The good-image term (`losses.normal_loss`); 0 is the paper's objective."""
    normal_topk: float = 0.01
    defect_weight: float = 0.0
    """Its counterpart on defects (`losses.defect_loss`); 0 is the paper's objective."""
    fine_branch: bool = False
    """Stride-4 pixel detail for the mask heads (`agvas.model.fine`); False is the paper's decoder."""
    self_reference: bool = False
    """Each patch's rarity within its image as a cue in the pixel embedding (`agvas.model.reference`);
    False is the paper's."""
    name: str = "agvas"
    architecture: str = field(default=ARCHITECTURE)

    def __post_init__(self) -> None:
        unknown = set(self.anchors) - set(ANCHOR_TOKENS)
        if unknown or not self.anchors:
            raise ValueError(f"anchors must be a non-empty subset of {ANCHOR_TOKENS}, got {self.anchors}")
        if (NOR in self.anchors) != (ANO in self.anchors):
            raise ValueError("[NOR] and [ANO] are relative anchors and come as a pair")
        if not 0.0 <= self.fusion_alpha <= 1.0:
            raise ValueError(f"fusion_alpha must be in [0, 1], got {self.fusion_alpha}")
        object.__setattr__(self, "anchors", tuple(a for a in ANCHOR_TOKENS if a in self.anchors))

    @property
    def has_relative(self) -> bool:
        return NOR in self.anchors

    @property
    def has_absolute(self) -> bool:
        return SEG in self.anchors

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        atomic_write_bytes(path, self.to_json().encode())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> AGVASConfig:
        path = Path(folder) / CONFIG_FILE
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"AG-VAS checkpoint folder {folder} does not exist")
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; is this an AG-VAS checkpoint? "
                                    "(save one with AGVASModel.save_pretrained)")
        raw = read_json(path)
        if raw.get("architecture") != ARCHITECTURE:
            raise ValueError(f"{path}: architecture is {raw.get('architecture')!r}, expected {ARCHITECTURE!r}")
        known = {f.name for f in fields(cls)}
        extra = set(raw) - known
        if extra:
            raise ValueError(f"{path}: unknown config fields {sorted(extra)} (written by a newer agvas?)")
        for key in ("anchors", "lora_targets"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


VARIANTS: dict[str, dict] = {
    "agvas": {},
    "no-seg": {"anchors": (NOR, ANO)},
    "no-relative": {"anchors": (SEG,)},
    "no-spam": {"use_spam": False},
    # LISA: one [SEG] token through a SAM-style decoder, no alignment module, no relative anchors.
    "lisa": {"anchors": (SEG,), "use_spam": False},
}

PRESETS: dict[str, dict] = {
    # Random backbones of the real classes, small enough to train on two CPU cores.
    "tiny": {"lmm": "lmm", "sam": "sam", "train_backbones": True, "lora_rank": 0, "spam_heads": 4,
             "decoder_heads": 4, "decoder_mlp_dim": 256, "init_decoder_from_sam": False},
    "llava-ov-0.5b": {"lmm": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "sam": "facebook/sam-vit-base"},
    # The paper's default backbones.
    "llava-ov-7b": {"lmm": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "sam": "facebook/sam-vit-huge"},
    # The paper's second backbone (Table 1): LLaVA-1.5 with its CLIP tower.
    "llava-1.5-13b": {"lmm": "llava-hf/llava-1.5-13b-hf", "sam": "facebook/sam-vit-huge"},
}


def preset_config(preset: str, variant: str = "agvas", **overrides) -> AGVASConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    values = {**PRESETS[preset], **VARIANTS[variant], "name": f"{preset}/{variant}"}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return AGVASConfig(**values)
