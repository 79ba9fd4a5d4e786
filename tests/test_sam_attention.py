"""SAM's global attention, banded on CPU (`RowBandSamAttention`): the same output as transformers', bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamVisionSdpaAttention

from agvas.model.backbones import PixelEncoder, RowBandSamAttention
from agvas.model.random_init import sam_config


def _attention(hidden: int = 64, heads: int = 4, image_size: int = 160) -> SamVisionSdpaAttention:
    config = sam_config("facebook/sam-vit-base", {"sam": {"vision_config": {
        "hidden_size": hidden, "num_attention_heads": heads, "image_size": image_size}}}).vision_config
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    attn = SamVisionSdpaAttention(config, window_size=0)
    with torch.no_grad():
        for p in attn.parameters():  # O(1) activations and a non-zero bias (SAM initialises rel_pos to 0)
            p.normal_(0, 0.2)
    return attn


@pytest.mark.parametrize("rows", [1, 3, 4, 16])
def test_banded_global_attention_equals_transformers(rows, monkeypatch):
    """Grid 10x10 (160 px / 16): bands that divide it, that do not (3, 4), and one larger than it (16)."""
    reference = _attention()
    banded = copy.deepcopy(reference)
    banded.__class__ = RowBandSamAttention
    monkeypatch.setattr(RowBandSamAttention, "rows", rows)
    x = torch.randn(2, 10, 10, 64)
    with torch.inference_mode():
        expected, got = reference(x)[0], banded(x)[0]
    assert torch.equal(got, expected)


def test_banded_attention_steps_aside_for_gradients():
    """With gradients (the tiny preset trains SAM) it is transformers' forward, and gradients flow."""
    banded = _attention()
    banded.__class__ = RowBandSamAttention
    x = torch.randn(1, 10, 10, 64, requires_grad=True)
    banded(x)[0].sum().backward()
    assert x.grad is not None and banded.qkv.weight.grad is not None


def test_pixel_encoder_bands_only_the_global_layers():
    config = sam_config("facebook/sam-vit-base", {"sam": {"vision_config": {
        "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "global_attn_indexes": [1, 3],
        "mlp_dim": 64, "image_size": 128}}})
    encoder = PixelEncoder(SamModel(config))
    kinds = [type(layer.attn) for layer in encoder.encoder.layers]
    assert kinds == [SamVisionSdpaAttention, RowBandSamAttention, SamVisionSdpaAttention, RowBandSamAttention]
