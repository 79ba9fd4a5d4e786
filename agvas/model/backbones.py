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
import torch.nn.functional as F
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
from transformers.models.sam.modeling_sam import SamVisionSdpaAttention

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


class RowBandSamAttention(SamVisionSdpaAttention):
    """SAM's global (unwindowed) attention with its relative-position bias built for a band of query rows
    at a time, on CPU at inference.

    Why: transformers builds a global layer's bias in full, (B, heads, HW, HW) fp32: at 1024 px that is
    805 MB per layer, freshly allocated, written, then read back by SDPA. A band of `rows` grid rows needs
    1/16 of it, and one buffer serves every band. Each query row still attends to every key with the same
    bias, so the output equals transformers' bit for bit (tested); SAM ViT-B at 1024 px ran 1.14x faster on
    the 2-core CPU of the README's speed table. Elsewhere (CUDA, or with gradients, as the tiny preset
    trains SAM) it is transformers' own forward.
    """

    rows = 4

    def forward(self, hidden_states: Tensor, output_attentions: bool = False) -> tuple[Tensor, None]:
        if hidden_states.device.type != "cpu" or torch.is_grad_enabled() or not self.use_rel_pos:
            return super().forward(hidden_states, output_attentions)
        b, h, w, _ = hidden_states.shape
        heads = self.num_attention_heads
        qkv = self.qkv(hidden_states).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # (B, heads, HW, C)
        dim = query.shape[-1]
        grid = query.reshape(b, heads, h, w, dim)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid, self.get_rel_pos(h, h, self.rel_pos_h))
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid, self.get_rel_pos(w, w, self.rel_pos_w))
        out = torch.empty_like(query)
        band = torch.empty(b, heads, min(self.rows, h), w, h, w, dtype=query.dtype)
        for top in range(0, h, self.rows):
            bottom = min(h, top + self.rows)
            bias = torch.add(bias_h[:, :, top:bottom, :, :, None], bias_w[:, :, top:bottom, :, None, :],
                             out=band[:, :, :bottom - top])
            rows = slice(top * w, bottom * w)
            out[:, :, rows] = F.scaled_dot_product_attention(query[:, :, rows], key, value,
                                                             attn_mask=bias.reshape(b, heads, -1, h * w))
        out = out.view(b, heads, h, w, dim).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out), None


class PixelEncoder(nn.Module):
    """F_p of the paper: SAM's ViT image encoder with its neck, (B, C, H/16, W/16) embeddings."""

    def __init__(self, sam: SamModel) -> None:
        super().__init__()
        self.encoder = sam.vision_encoder
        self.out_channels = sam.config.vision_config.output_channels
        self.image_size = sam.config.vision_config.image_size
        for layer in self.encoder.layers:  # the global layers' attention, banded (same weights, same output)
            if layer.window_size == 0 and type(layer.attn) is SamVisionSdpaAttention:
                layer.attn.__class__ = RowBandSamAttention

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.encoder(pixel_values).last_hidden_state
