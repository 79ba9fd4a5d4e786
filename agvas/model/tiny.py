"""The `tiny` preset's backbones: the real Hugging Face classes, randomly initialised and small.

They are written to a folder with `save_pretrained` exactly like a downloaded checkpoint, so the code
that loads a user's LLaVA-OneVision and SAM is the code every test and the shipped tiny model run.
The tokenizer is a byte-level BPE trained here, deterministically, on instruction-style English, with a
Qwen2-style chat template, since no pretrained tokenizer can be downloaded.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SamConfig,
    SamMaskDecoderConfig,
    SamModel,
    SamPromptEncoderConfig,
    SamVisionConfig,
    SiglipVisionConfig,
)
from transformers.image_utils import PILImageResampling
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from agvas.anchors import IMAGE_PLACEHOLDER

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_PLACEHOLDER, "<video>"]

_SUBJECTS = ["surface", "object", "texture", "part", "fabric", "wood", "metal", "tile", "screw", "bottle",
             "carpet", "leather", "grid", "cable", "capsule", "pill", "nut", "road", "polyp", "tissue", "shape"]
_DEFECTS = ["scratch", "crack", "hole", "stain", "colour change", "missing piece", "contamination", "fold",
            "deformation", "dent", "cut", "spot", "tear", "blob", "particle", "lesion", "bump"]
_PLACES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
_COLOURS = ["red", "green", "blue", "yellow", "white", "black", "grey", "brown", "orange", "purple", "darker",
            "brighter", "reddish"]
_SIZES = ["tiny", "small", "medium", "large", "thin", "long", "round", "elongated", "irregular"]
_SENTENCES = [
    "Please segment the anomalies in this image.",
    "What anomalies are present in this image? Please describe the anomalies and then output the "
    "segmentation map.",
    "Sure, it is the segmentation result.",
    "There is no anomaly in this image; the surface looks normal and uniform.",
    "The anomaly is a {s} {d} located on the {p} part of the {o}, as indicated by the mask.",
    "A normal {o} should have a regular, consistent {o} without any {d}.",
    "The {d} breaks the material consistency of the {o} because it differs in colour, shape and texture.",
    "Segment the {c} {o}. How many {c} shapes are there? There are {n} shapes. What colour is the circle?",
    "Segment the {d} in the {p} of the image, a {s} {c} region that differs from its surroundings.",
    "The mask covers the {d}; it is {s} and {c}, in the {p}, and it should not be there.",
]


def _corpus() -> list[str]:
    out = []
    combos = itertools.product(_SUBJECTS, _DEFECTS, _PLACES)
    for i, (o, d, p) in enumerate(combos):
        s, c = _SIZES[i % len(_SIZES)], _COLOURS[i % len(_COLOURS)]
        out.append(" ".join(t.format(o=o, d=d, p=p, s=s, c=c, n=i % 9) for t in _SENTENCES))
    return out


def build_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text encodes) with the LLaVA-OneVision/Qwen2 special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=[IMAGE_PLACEHOLDER, "<video>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_lmm(tokenizer: PreTrainedTokenizerFast, *, image_size: int = 96, patch_size: int = 16,
                   vision_width: int = 96, llm_width: int = 192, llm_layers: int = 2,
                   ) -> LlavaOnevisionForConditionalGeneration:
    vision = SiglipVisionConfig(
        hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=llm_width, intermediate_size=2 * llm_width,
        num_hidden_layers=llm_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_grid_pinpoints=[[image_size, image_size]],
    )
    return LlavaOnevisionForConditionalGeneration(config)


def build_tiny_llava15(tokenizer: PreTrainedTokenizerFast, *, image_size: int = 112, patch_size: int = 14,
                       tie_word_embeddings: bool = True) -> LlavaForConditionalGeneration:
    """LLaVA-1.5's layout (CLIP tower, layer -2, CLS dropped, Llama LLM), for testing the second family."""
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                              image_size=image_size, patch_size=patch_size, projection_dim=64)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                       tie_word_embeddings=tie_word_embeddings, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER),
                         image_seq_length=(image_size // patch_size) ** 2, tie_word_embeddings=tie_word_embeddings)
    return LlavaForConditionalGeneration(config)


def build_tiny_sam(*, image_size: int = 256, patch_size: int = 16, width: int = 128, layers: int = 6,
                   out_channels: int = 64) -> SamModel:
    """Sized by measurement: 256 px input with 16 px patches keeps fine detail in the patch embedding while
    the ViT sees only 16x16 tokens (27 training images/s with the tiny LMM on 2 cores, against 10 with
    8 px patches)."""
    vision = SamVisionConfig(
        hidden_size=width, output_channels=out_channels, num_hidden_layers=layers, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, window_size=8,
        global_attn_indexes=sorted({layers // 2 - 1, layers - 1}),
        mlp_dim=2 * width, num_pos_feats=out_channels // 2, initializer_range=0.02,
    )
    grid = image_size // patch_size
    prompt = SamPromptEncoderConfig(hidden_size=out_channels, image_size=image_size, patch_size=patch_size,
                                    image_embedding_size=grid, mask_input_channels=16)
    decoder = SamMaskDecoderConfig(hidden_size=out_channels, mlp_dim=4 * out_channels, num_attention_heads=4,
                                   iou_head_hidden_dim=out_channels)
    return SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))


def write_tiny_backbones(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Create and save the tiny LLaVA-OneVision and SAM (with their processors) under folder/{lmm,sam}."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    lmm = build_tiny_lmm(tokenizer)
    sam = build_tiny_sam()
    lmm_dir, sam_dir = folder / "lmm", folder / "sam"
    lmm.save_pretrained(lmm_dir)
    tokenizer.save_pretrained(lmm_dir)
    size = lmm.config.vision_config.image_size
    # Bilinear, not SigLIP's bicubic: the shipped tiny checkpoint was trained so, and the filter is read from here.
    SiglipImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                            resample=PILImageResampling.BILINEAR).save_pretrained(lmm_dir)
    sam.save_pretrained(sam_dir)
    side = sam.config.vision_config.image_size
    SamImageProcessorPil(size={"longest_edge": side}, pad_size={"height": side, "width": side}).save_pretrained(sam_dir)
    return lmm_dir, sam_dir
