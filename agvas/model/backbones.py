"""Loading the frozen parts — the LMM (semantic encoder + projector + LLM) and SAM's image encoder.

The wrapper depends only on what the LLaVA family shares in transformers (`model.vision_tower`,
`model.multi_modal_projector`, `model.language_model`, `lm_head`, `config.image_token_id`,
`vision_feature_layer`, `vision_feature_select_strategy`), so LLaVA-1.5 and LLaVA-OneVision both work.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    LlavaForConditionalGeneration,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SamModel,
)

LMM_CLASSES: dict[str, type[PreTrainedModel]] = {
    "llava_onevision": LlavaOnevisionForConditionalGeneration,
    "llava": LlavaForConditionalGeneration,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what to do about it."""


def _config(path: str, what: str, expected: tuple[str, ...]):
    local = Path(path)
    looks_local = local.is_absolute() or path.startswith(".") or os.sep in path.strip("/").split("/", 1)[0]
    if looks_local and not local.exists():
        raise CheckpointError(f"{what} checkpoint folder {path} does not exist; pass the folder that holds its "
                              "config.json and *.safetensors (or a hub id when online)")
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise CheckpointError(
            f"cannot load the {what} config from {path!r}: {err}. Pass a local folder with config.json "
            "(the hub cannot be reached offline: set HF_HUB_OFFLINE=0 and log in to download)"
        ) from None
    if config.model_type not in expected:
        raise CheckpointError(f"{path}: is a {config.model_type!r} checkpoint, but the {what} must be one of "
                              f"{', '.join(expected)}")
    return config


def load_lmm(path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A LLaVA-family model (its vision tower, projector and LLM) from a folder or hub id."""
    config = _config(path, "LMM", tuple(LMM_CLASSES))
    return LMM_CLASSES[config.model_type].from_pretrained(path, dtype=dtype)


def load_sam(path: str, dtype: torch.dtype = torch.float32) -> SamModel:
    """A full SAM: the image encoder is kept, the mask decoder may initialise AGMD, the rest is dropped."""
    _config(path, "SAM", ("sam",))
    return SamModel.from_pretrained(path, dtype=dtype)


# LLaVA-1.5 (Vicuna v1) conversation format. llava-hf ships it only with the processor, in a
# multimodal-content form; AG-VAS conversations are plain strings with an "<image>" placeholder.
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}A chat between a curious human and an artificial "
    "intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's "
    "questions. {% endif %}{% if message['role'] == 'user' %}USER: {{ message['content'] }} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def load_tokenizer(path: str, model_type: str | None = None) -> PreTrainedTokenizerBase:
    """The LMM's tokenizer; LLaVA-1.5's gets its Vicuna chat template when the folder has none."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None and model_type == "llava":
        tokenizer.chat_template = VICUNA_TEMPLATE
    return tokenizer


@dataclass(frozen=True)
class ImageSpec:
    """How one encoder wants its pixels: resized size and normalisation (read from its processor config)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bilinear"
    """torch's name for the processor's PIL filter; the encoder was trained on images resized with it."""


_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's BILINEAR, BICUBIC


def _resample(proc, default: str) -> str:
    return _RESAMPLE.get(int(getattr(proc, "resample", None) or 0), default)


def _processor(path: str):
    # Only mean/std/size are read; the PIL fallback warning about torchvision is noise here.
    logging.getLogger("transformers.image_processing_utils").setLevel(logging.ERROR)
    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError):
        return None


def semantic_image_spec(lmm: PreTrainedModel, path: str) -> ImageSpec:
    proc = _processor(path)
    size = int(lmm.config.vision_config.image_size)
    mean = tuple(getattr(proc, "image_mean", None) or (0.5, 0.5, 0.5))
    std = tuple(getattr(proc, "image_std", None) or (0.5, 0.5, 0.5))
    return ImageSpec(size, mean, std, _resample(proc, "bicubic"))


def pixel_image_spec(size: int, path: str) -> ImageSpec:
    proc = _processor(path)
    mean = tuple(getattr(proc, "image_mean", None) or (0.485, 0.456, 0.406))
    std = tuple(getattr(proc, "image_std", None) or (0.229, 0.224, 0.225))
    return ImageSpec(size, mean, std)


class SemanticEncoder(nn.Module):
    """F_s of the paper: the LMM's vision tower and projector, at the tower's base resolution.

    Any-resolution tiling is not used: the base image's tokens are the queries of SPAM (DESIGN.md),
    which keeps the LLM sequence short and the same for every image.
    """

    def __init__(self, lmm: PreTrainedModel) -> None:
        super().__init__()
        inner = lmm.model
        self.vision_tower = inner.vision_tower
        self.projector = inner.multi_modal_projector
        self.feature_layer = lmm.config.vision_feature_layer
        self.select = lmm.config.vision_feature_select_strategy
        vc = lmm.config.vision_config
        self.num_tokens = (vc.image_size // vc.patch_size) ** 2

    def forward(self, pixel_values: Tensor) -> Tensor:
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        layers = [self.feature_layer] if isinstance(self.feature_layer, int) else list(self.feature_layer)
        feats = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
        if self.select == "default":  # CLIP towers prepend a CLS token that LLaVA drops
            feats = feats[:, 1:]
        return self.projector(feats)


class PixelEncoder(nn.Module):
    """F_p of the paper: SAM's ViT image encoder with its neck, (B, C, H/16, W/16) embeddings."""

    def __init__(self, sam: SamModel) -> None:
        super().__init__()
        self.encoder = sam.vision_encoder
        self.out_channels = sam.config.vision_config.output_channels
        self.image_size = sam.config.vision_config.image_size

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.encoder(pixel_values).last_hidden_state
