"""Real presets' backbones with random weights, from the shipped architecture facts: no download.

Shapes, memory and speed bugs at the paper's scale show up only at the real sizes; these builders give
those sizes without the Hub. On the meta device nothing is allocated (parameter tables of the 7B/13B
presets); on CPU the weights are drawn by each class's own initialiser. `write_random_backbones` saves
them with `save_pretrained`, with a stand-in tokenizer and the checkpoint's image-processor config, so
they load back through exactly the code that loads a downloaded checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LlavaConfig,
    LlavaOnevisionConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SamConfig,
    SamModel,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from agvas.model.architectures import IMAGE_PROCESSORS, lmm_architecture, sam_architecture
from agvas.model.backbones import LMM_CLASSES, ImageSpec
from agvas.model.stand_in_tokenizer import stand_in_tokenizer

_CONFIGS = {"llava_onevision": LlavaOnevisionConfig, "llava": LlavaConfig}

Overrides = dict[str, dict[str, Any]]
"""Per sub-config changes, e.g. {"text_config": {"num_hidden_layers": 2}} — for shrunken test models."""


def _merge(facts: dict[str, Any], overrides: Overrides | None) -> dict[str, Any]:
    for key, values in (overrides or {}).items():
        if isinstance(facts.get(key), dict):
            facts[key] = {**facts[key], **values}
        else:
            facts[key] = values
    return facts


def lmm_config(hub_id: str, overrides: Overrides | None = None):
    facts = _merge(lmm_architecture(hub_id), (overrides or {}).get("lmm"))
    kind = facts.pop("model_type")
    return _CONFIGS[kind](**facts)


# The published SAM configs keep transformers' vision default initializer_range = 1e-10 (the real weights
# come from the checkpoint): drawn at that scale, a random encoder outputs near-constant features, and
# every timing, int8 or parity figure taken on it would describe a degenerate model.
RANDOM_SAM_VISION_STD = 0.02


def sam_config(hub_id: str, overrides: Overrides | None = None) -> SamConfig:
    facts = _merge(sam_architecture(hub_id), {"vision_config": {"initializer_range": RANDOM_SAM_VISION_STD}})
    return SamConfig(**_merge(facts, (overrides or {}).get("sam")))


def _on(device: str | torch.device, build):
    with torch.device(device):
        return build()


@dataclass
class RandomBackbones:
    lmm: PreTrainedModel
    sam: SamModel
    tokenizer: PreTrainedTokenizerBase
    semantic_spec: ImageSpec
    pixel_spec: ImageSpec


def _spec(hub_id: str, size: int) -> ImageSpec:
    proc = IMAGE_PROCESSORS[hub_id]
    return ImageSpec(size, tuple(proc["image_mean"]), tuple(proc["image_std"]),
                     {2: "bilinear", 3: "bicubic"}[proc["resample"]])


def random_backbones(lmm_id: str, sam_id: str, device: str | torch.device = "cpu",
                     overrides: Overrides | None = None) -> RandomBackbones:
    """The LMM, SAM, tokenizer stand-in and image specs of a real preset, randomly initialised on `device`.

    `overrides` = {"lmm": {...}, "sam": {...}}, each mapping a config field or sub-config name to new
    values, shrinks them for tests while keeping the rest of the published architecture.
    """
    lcfg, scfg = lmm_config(lmm_id, overrides), sam_config(sam_id, overrides)
    lmm = _on(device, lambda: LMM_CLASSES[lcfg.model_type](lcfg))
    sam = _on(device, lambda: SamModel(scfg))
    tokenizer = stand_in_tokenizer(lcfg.text_config.model_type)
    return RandomBackbones(lmm, sam, tokenizer, _spec(lmm_id, lcfg.vision_config.image_size),
                           _spec(sam_id, scfg.vision_config.image_size))


def _image_processor(hub_id: str, size: int):
    facts = {k: v for k, v in IMAGE_PROCESSORS[hub_id].items() if k != "kind"}
    kind = IMAGE_PROCESSORS[hub_id]["kind"]
    if kind == "sam":
        return SamImageProcessorPil(**{**facts, "size": {"longest_edge": size},
                                       "pad_size": {"height": size, "width": size}})
    if kind == "clip":
        return CLIPImageProcessorPil(**{**facts, "size": {"shortest_edge": size},
                                     "crop_size": {"height": size, "width": size}})
    return LlavaOnevisionImageProcessorPil(**{**facts, "size": {"height": size, "width": size}})


def write_random_backbones(lmm_id: str, sam_id: str, folder: str | Path, seed: int = 0,
                           overrides: Overrides | None = None, device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32) -> tuple[Path, Path]:
    """Save random backbones under folder/{lmm,sam} as downloaded checkpoints are laid out.

    Drawn on `device` and written in `dtype`: the GPU check draws 7B weights on the GPU in seconds and
    writes them in bf16 (16 GB instead of 32 GB of disk and of loading time).
    """
    folder = Path(folder)
    torch.manual_seed(seed)
    parts = random_backbones(lmm_id, sam_id, device, overrides)
    lmm_dir, sam_dir = folder / "lmm", folder / "sam"
    parts.lmm.to(dtype).save_pretrained(lmm_dir)
    parts.tokenizer.save_pretrained(lmm_dir)
    _image_processor(lmm_id, parts.semantic_spec.size).save_pretrained(lmm_dir)
    del parts.lmm
    parts.sam.to(dtype).save_pretrained(sam_dir)
    _image_processor(sam_id, parts.pixel_spec.size).save_pretrained(sam_dir)
    return lmm_dir, sam_dir
