"""The published architectures of the real presets' backbones, as plain data, so that they build offline.

Every value below is a `config.json` (or `preprocessor_config.json` / tokenizer) fact of the named Hub
checkpoint, written from those files as published by llava-hf and facebook on the Hugging Face Hub
(revisions of 2024; the llava-hf conversion scripts in transformers <= 4.46 produced them). Where a field
equals the transformers default of its config class it is still written out, so that a future change of
a default cannot change the shapes silently. Cross-checked against the public copies we could reach
offline: the LLaVA-OneVision image token id 151646 and the 36 `image_grid_pinpoints` (384..2304 px) of
llava-onevision-qwen2-0.5b/7b-ov-hf; the Qwen2-0.5B text sizes (896/4864/24 layers/14 heads/2 kv heads).
The vocabulary sizes are the LLM's vocabulary plus <image> and <video>, padded to a multiple of 64 by the
conversion (Qwen2-0.5B 151936 -> 152000, Qwen2-7B 152064 -> 152128, Llama-2 32000 -> 32064).

Only `agvas.model.random_init` reads this module; nothing here downloads or loads weights.
"""

from __future__ import annotations

import copy
from typing import Any

# LLaVA-OneVision's any-resolution grid: every (h, w) multiple of 384 up to 6x6 tiles.
_OV_PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]

# The SigLIP-SO400M/14 tower at 384 px that both LLaVA-OneVision checkpoints use
# (google/siglip-so400m-patch14-384, without its attention-pooling head).
_SIGLIP_SO400M_384 = {
    "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
    "num_hidden_layers": 26, "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "vision_use_head": False,
}


def _onevision(tie: bool, **text: Any) -> dict[str, Any]:
    """A LLaVA-OneVision config: the fields both published sizes share, and its Qwen2's own sizes."""
    return {
        "model_type": "llava_onevision",
        "image_token_index": 151646, "video_token_index": 151647,
        "projector_hidden_act": "gelu", "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
        "vision_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": _OV_PINPOINTS,
        "tie_word_embeddings": tie,
        "vision_config": _SIGLIP_SO400M_384,
        "text_config": {
            "model_type": "qwen2", "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "use_sliding_window": False, "max_window_layers": text["num_hidden_layers"],
            "tie_word_embeddings": tie, "bos_token_id": 151643, "eos_token_id": 151645, **text,
        },
    }


LMM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    # https://huggingface.co/llava-hf/llava-onevision-qwen2-0.5b-ov-hf/blob/main/config.json
    # Qwen/Qwen2-0.5B-Instruct
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": _onevision(
        tie=True, vocab_size=152000, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, sliding_window=32768),
    # https://huggingface.co/llava-hf/llava-onevision-qwen2-7b-ov-hf/blob/main/config.json
    # Qwen/Qwen2-7B-Instruct
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": _onevision(
        tie=False, vocab_size=152128, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, sliding_window=131072),
    # https://huggingface.co/llava-hf/llava-1.5-13b-hf/blob/main/config.json
    "llava-hf/llava-1.5-13b-hf": {
        "model_type": "llava",
        "image_token_index": 32000, "image_seq_length": 576, "pad_token_id": 32001,
        "projector_hidden_act": "gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
        # openai/clip-vit-large-patch14-336
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
            "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
            "projection_dim": 768, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        },
        # lmsys/vicuna-13b-v1.5 (Llama-2-13B)
        "text_config": {
            "model_type": "llama", "vocab_size": 32064, "hidden_size": 5120, "intermediate_size": 13824,
            "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
            "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32001,
        },
    },
}

# SAM's prompt encoder and mask decoder are the same for every ViT size (SamConfig's defaults).
_SAM_PROMPT = {"hidden_size": 256, "image_size": 1024, "patch_size": 16, "mask_input_channels": 16,
               "num_point_embeddings": 4, "hidden_act": "gelu", "layer_norm_eps": 1e-6}
_SAM_DECODER = {"hidden_size": 256, "hidden_act": "relu", "mlp_dim": 2048, "num_hidden_layers": 2,
                "num_attention_heads": 8, "attention_downsample_rate": 2, "num_multimask_outputs": 3,
                "iou_head_depth": 3, "iou_head_hidden_dim": 256, "layer_norm_eps": 1e-6}
_SAM_VISION_COMMON = {"output_channels": 256, "image_size": 1024, "patch_size": 16, "window_size": 14,
                      "num_channels": 3, "qkv_bias": True, "use_abs_pos": True, "use_rel_pos": True,
                      "mlp_ratio": 4.0, "num_pos_feats": 128, "layer_norm_eps": 1e-6, "hidden_act": "gelu"}

SAM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    # https://huggingface.co/facebook/sam-vit-base/blob/main/config.json (ViT-B/16)
    "facebook/sam-vit-base": {
        "vision_config": {**_SAM_VISION_COMMON, "hidden_size": 768, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "global_attn_indexes": [2, 5, 8, 11], "mlp_dim": 3072},
        "prompt_encoder_config": _SAM_PROMPT, "mask_decoder_config": _SAM_DECODER,
    },
    # https://huggingface.co/facebook/sam-vit-huge/blob/main/config.json (ViT-H/16)
    "facebook/sam-vit-huge": {
        "vision_config": {**_SAM_VISION_COMMON, "hidden_size": 1280, "num_hidden_layers": 32,
                          "num_attention_heads": 16, "global_attn_indexes": [7, 15, 23, 31], "mlp_dim": 5120},
        "prompt_encoder_config": _SAM_PROMPT, "mask_decoder_config": _SAM_DECODER,
    },
}

# preprocessor_config.json of each checkpoint: what agvas' own preprocessing must reproduce.
IMAGE_PROCESSORS: dict[str, dict[str, Any]] = {
    # LlavaOnevisionImageProcessor: squash to 384x384 (bicubic), mean/std 0.5 (SigLIP), plus anyres crops.
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": {
        "kind": "siglip", "size": {"height": 384, "width": 384}, "resample": 3,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": {
        "kind": "siglip", "size": {"height": 384, "width": 384}, "resample": 3,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    # CLIPImageProcessor: shortest side 336 (bicubic), centre crop 336, OpenAI CLIP mean/std.
    "llava-hf/llava-1.5-13b-hf": {
        "kind": "clip", "size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336},
        "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]},
    # SamImageProcessor: longest side 1024 (bilinear), pad bottom-right to 1024x1024, ImageNet mean/std.
    "facebook/sam-vit-base": {
        "kind": "sam", "size": {"longest_edge": 1024}, "pad_size": {"height": 1024, "width": 1024},
        "resample": 2, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
    "facebook/sam-vit-huge": {
        "kind": "sam", "size": {"longest_edge": 1024}, "pad_size": {"height": 1024, "width": 1024},
        "resample": 2, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
}

# The tokenizers' facts (tokenizer_config.json / added_tokens): vocabulary before the added tokens, the
# special tokens with their ids, and the chat format.
TOKENIZERS: dict[str, dict[str, Any]] = {
    # Qwen2's byte-level BPE: 151643 regular tokens, then the specials; llava-hf adds <image>, <video>.
    "qwen2": {"regular": 151643, "leading": [],
              "trailing": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
              "eos": "<|im_end|>", "pad": "<|endoftext|>", "bos": None, "template": "chatml"},
    # Llama-2's SentencePiece: <unk> <s> </s> at 0..2 within 32000; llava-hf adds <image> (32000), <pad>.
    "llama": {"regular": 32000, "leading": ["<unk>", "<s>", "</s>"], "trailing": ["<image>", "<pad>"],
              "eos": "</s>", "pad": "<pad>", "bos": "<s>", "template": "vicuna"},
}


def lmm_architecture(hub_id: str) -> dict[str, Any]:
    """A deep copy of one LMM's facts (callers may edit it, e.g. to shrink a test model)."""
    if hub_id not in LMM_ARCHITECTURES:
        raise KeyError(f"no shipped architecture for {hub_id!r}; known: {', '.join(LMM_ARCHITECTURES)}")
    return copy.deepcopy(LMM_ARCHITECTURES[hub_id])


def sam_architecture(hub_id: str) -> dict[str, Any]:
    if hub_id not in SAM_ARCHITECTURES:
        raise KeyError(f"no shipped architecture for {hub_id!r}; known: {', '.join(SAM_ARCHITECTURES)}")
    return copy.deepcopy(SAM_ARCHITECTURES[hub_id])
