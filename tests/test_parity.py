"""Parity with transformers: agvas' own input assembly and preprocessing against the checkpoints' code.

Real LLaVA checkpoints must behave in agvas as in their authors' code, so the manual parts of agvas —
expanding the image placeholder, writing the projected features into the image slots, choosing the
vision feature layer, the SAM and SigLIP/CLIP preprocessing, the pixel encoder — are compared with
transformers on the same weights and inputs. Where agvas differs on purpose (README, "Parity with
transformers"), the test switches that difference off on the transformers side and says so.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from model_fixtures import build
from transformers import SamModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_onevision import modeling_llava_onevision
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from agvas.anchors import IMAGE_PLACEHOLDER
from agvas.model.architectures import IMAGE_PROCESSORS
from agvas.model.backbones import ImageSpec
from agvas.model.config import preset_config

TEXT = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\nWhat is unusual in this image?"},
        {"role": "assistant", "content": "A scratch on the left of the metal part."}]


def _image(h: int = 80, w: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _agvas_logits(model, image):
    batch = model.processor({"images": [torch.from_numpy(image).permute(2, 0, 1)], "conversations": [TEXT]})
    with torch.no_grad():
        f_s, f_p = model.encode_images(batch["semantic_pixels"], batch["sam_pixels"])
        _, logits = model.run_llm(model.embed_inputs(batch["input_ids"], f_s, f_p), batch["attention_mask"])
    return batch, logits


def test_llava_onevision_logits_equal_transformers_forward(tiny_backbones, monkeypatch):
    """SPAM off, no anchors in the text: the LLM input is transformers' own, except agvas' two choices —
    no any-resolution tiles and no image_newline token — which are switched off on transformers' side."""
    model = build(preset_config("tiny", "no-spam"), tiny_backbones)
    image = _image()
    batch, ours = _agvas_logits(model, image)
    lmm = model.base_lmm
    monkeypatch.setattr(modeling_llava_onevision, "image_size_to_num_patches", lambda **kwargs: 1)
    monkeypatch.setattr(lmm.model, "image_newline", None)
    with torch.no_grad():
        theirs = lmm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["semantic_pixels"][:, None], image_sizes=torch.tensor([image.shape[:2]]),
                     ).logits
    assert (batch["input_ids"] == lmm.config.image_token_id).sum() == model.semantic_encoder.num_tokens
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_llava15_logits_equal_transformers_forward(tiny_backbones):
    """LLaVA-1.5 has no anyres and no newline: its forward is compared as is (CLIP layer -2, CLS dropped)."""
    config = dataclasses.replace(preset_config("tiny", "no-spam"), lmm=str(tiny_backbones / "llava15"),
                                 sam=str(tiny_backbones / "sam"))
    model = build(config, None)
    image = _image()
    batch, ours = _agvas_logits(model, image)
    with torch.no_grad():
        theirs = model.base_lmm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                pixel_values=batch["semantic_pixels"]).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_pixel_encoder_equals_sam_get_image_embeddings(tiny_backbones):
    model = build(preset_config("tiny"), tiny_backbones)
    sam = SamModel.from_pretrained(tiny_backbones / "sam").eval()
    x = model.processor.preprocess_images([_image()])["sam_pixels"]
    with torch.no_grad():
        torch.testing.assert_close(model.pixel_encoder(x), sam.get_image_embeddings(x), atol=1e-5, rtol=1e-5)


def _processor_at(model, semantic: str, pixel: str):
    """The tiny model's processor with a real checkpoint's sizes and normalisation."""
    proc = copy.copy(model.processor)
    sem, pix = IMAGE_PROCESSORS[semantic], IMAGE_PROCESSORS[pixel]
    side = sem["size"].get("height") or sem["size"]["shortest_edge"]
    proc.semantic = ImageSpec(side, tuple(sem["image_mean"]), tuple(sem["image_std"]), "bicubic")
    proc.pixel = ImageSpec(pix["size"]["longest_edge"], tuple(pix["image_mean"]), tuple(pix["image_std"]))
    return proc


# One uint8 step after normalisation by the smallest std: PIL rounds each resized pixel to uint8,
# agvas resizes in float. Half a step is the largest rounding error; the rest is PIL's fixed-point maths.
STEP_SAM = 1 / 255 / 0.224


@pytest.mark.parametrize("shape", [(80, 120), (600, 400), (1024, 1024)])
def test_sam_preprocessing_matches_sam_image_processor(tiny_backbones, shape):
    model = build(preset_config("tiny"), tiny_backbones)
    proc = _processor_at(model, "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "facebook/sam-vit-base")
    image = _image(*shape)
    ours = proc.preprocess_images([image])
    facts = {k: v for k, v in IMAGE_PROCESSORS["facebook/sam-vit-base"].items() if k != "kind"}
    theirs = SamImageProcessorPil(**facts)(images=[image], return_tensors="pt")
    assert ours["resized_sizes"].tolist() == theirs["reshaped_input_sizes"].tolist()
    assert ours["original_sizes"].tolist() == theirs["original_sizes"].tolist()
    diff = (ours["sam_pixels"] - theirs["pixel_values"]).abs()
    assert ours["sam_pixels"].shape == theirs["pixel_values"].shape == (1, 3, 1024, 1024)
    assert float(diff.max()) <= STEP_SAM and float(diff.mean()) <= 0.3 * STEP_SAM


def test_semantic_preprocessing_against_siglip_and_clip_processors(tiny_backbones):
    """Same size, filter (bicubic, antialiased) and normalisation as the checkpoints' processors, to within
    PIL's uint8 rounding. One documented difference: agvas squashes where CLIP crops the centre (so the
    whole image, borders included, reaches the LLM); on a square image, as here, the crop is a no-op."""
    model = build(preset_config("tiny"), tiny_backbones)
    image = _image(300, 300)
    smooth = np.asarray(torch.nn.functional.interpolate(  # a natural-ish image: bicubic vs bilinear is small
        torch.from_numpy(image).permute(2, 0, 1)[None].float(), (600, 600), mode="bilinear")[0]
        .permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8))
    for name, processor in (("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", LlavaOnevisionImageProcessorPil),
                            ("llava-hf/llava-1.5-13b-hf", CLIPImageProcessorPil)):
        facts = {k: v for k, v in IMAGE_PROCESSORS[name].items() if k != "kind"}
        ours = _processor_at(model, name, "facebook/sam-vit-base").preprocess_images([smooth])["semantic_pixels"]
        if processor is LlavaOnevisionImageProcessorPil:
            theirs = processor(**facts, image_grid_pinpoints=[[384, 384]])(images=[smooth], return_tensors="pt")
            theirs = theirs["pixel_values"][:, 0]  # the base-resolution image (agvas uses no tiles)
        else:
            theirs = processor(**facts)(images=[smooth], return_tensors="pt")["pixel_values"]
        assert ours.shape == theirs.shape
        step = 1 / 255 / min(facts["image_std"])
        diff = (ours - theirs).abs()
        assert float(diff.mean()) <= 0.5 * step, (name, float(diff.mean()) / step)
