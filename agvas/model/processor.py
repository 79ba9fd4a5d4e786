"""Turning conversations and images into model inputs: the one place that knows the token layout.

The LLM input is Concat(f_s, f_align, text) (paper Eq. 3): the single `<image>` placeholder of the first
user turn is expanded here into N_s + N_align placeholder ids, and the model writes f_s into the first
N_s of them and f_align into the rest. Finding an anchor is then just finding its id in the expanded ids,
so the positions used for the anchors' hidden states can never be off by the image length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from agvas.anchors import ANCHOR_TOKENS, IMAGE_PLACEHOLDER
from agvas.model.backbones import ImageSpec

IGNORE_INDEX = -100
Message = dict[str, str]


@dataclass
class EncodedText:
    input_ids: list[int]
    labels: list[int]


def add_anchor_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Add [NOR] [ANO] [SEG] as special tokens (no-op when present); return their ids."""
    missing = [t for t in ANCHOR_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return {t: tokenizer.convert_tokens_to_ids(t) for t in ANCHOR_TOKENS}


class AGVASProcessor:
    """Tokenises conversations (labels on assistant turns only) and prepares pixels for both encoders."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_token_id: int, num_semantic_tokens: int,
                 num_aligned_tokens: int, semantic: ImageSpec, pixel: ImageSpec) -> None:
        if tokenizer.chat_template is None:
            raise ValueError("the LMM tokenizer has no chat template; save one with the checkpoint's tokenizer")
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.num_image_tokens = num_semantic_tokens + num_aligned_tokens
        self.semantic, self.pixel = semantic, pixel
        self.anchor_ids = add_anchor_tokens(tokenizer)
        found = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        if found != image_token_id:
            raise ValueError(f"tokenizer maps {IMAGE_PLACEHOLDER} to {found} but the LMM expects {image_token_id}")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ---- text -------------------------------------------------------------------------------------
    def _render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def encode(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> EncodedText:
        """Token ids with the image expanded; labels are the assistant turns' tokens, -100 elsewhere.

        Each turn is tokenised as the difference between consecutive renderings of the chat template,
        so any template works, and a label never covers a role header.
        """
        self._check(messages)
        ids: list[int] = []
        labels: list[int] = []
        rendered = ""
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                header = self._render(messages[:i], add_generation_prompt=True)
                seg = self._ids(header[len(rendered):])
                ids += seg
                labels += [IGNORE_INDEX] * len(seg)
                rendered = header
            full = self._render(messages[: i + 1])
            seg = self._ids(full[len(rendered):])
            ids += seg
            labels += seg if message["role"] == "assistant" else [IGNORE_INDEX] * len(seg)
            rendered = full
        if add_generation_prompt:
            seg = self._ids(self._render(messages, add_generation_prompt=True)[len(rendered):])
            ids += seg
            labels += [IGNORE_INDEX] * len(seg)
        return self._expand_image(ids, labels)

    def _check(self, messages: Sequence[Message]) -> None:
        if not messages:
            raise ValueError("empty conversation")
        n = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
        if n != 1:
            raise ValueError(f"a conversation must contain {IMAGE_PLACEHOLDER} exactly once, found {n}")
        for m in messages:
            if m.get("role") not in ("user", "assistant", "system"):
                raise ValueError(f"unknown role {m.get('role')!r} in conversation")

    def _expand_image(self, ids: list[int], labels: list[int]) -> EncodedText:
        at = ids.index(self.image_token_id)
        n = self.num_image_tokens
        return EncodedText(
            ids[:at] + [self.image_token_id] * n + ids[at + 1:],
            labels[:at] + [IGNORE_INDEX] * n + labels[at + 1:],
        )

    def pad(self, encoded: Sequence[EncodedText]) -> dict[str, Tensor]:
        """Right-pad a batch (anchor positions stay where they are)."""
        length = max(len(e.input_ids) for e in encoded)
        ids = torch.full((len(encoded), length), self.pad_id, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        attn = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            n = len(e.input_ids)
            ids[i, :n] = torch.tensor(e.input_ids)
            labels[i, :n] = torch.tensor(e.labels)
            attn[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attn}

    # ---- images -----------------------------------------------------------------------------------
    @staticmethod
    def _as_float(image: Tensor | np.ndarray) -> Tensor:
        """uint8 (3, H, W) tensor or (H, W, 3) array -> float (1, 3, H, W) in [0, 1]."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise TypeError(f"expected a uint8 HxWx3 RGB array, got {image.dtype} {image.shape}")
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise TypeError(f"expected a uint8 3xHxW RGB tensor, got {image.dtype} {tuple(image.shape)}")
        return image.unsqueeze(0).float() / 255.0

    @staticmethod
    def _normalise(x: Tensor, spec: ImageSpec) -> Tensor:
        mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def preprocess_images(self, images: Sequence[Tensor | np.ndarray]) -> dict[str, Tensor]:
        """Both encoders' pixels: the semantic one squashed to its square size, the pixel one resized so
        that its longest side is SAM's input size and padded bottom-right (SAM's convention)."""
        sem, pix, resized, original = [], [], [], []
        side = self.pixel.size
        for image in images:
            x = self._as_float(image)
            h, w = x.shape[-2:]
            original.append((h, w))
            s = self.semantic.size
            # The checkpoint's filter (SigLIP/CLIP: bicubic), clamped as PIL's uint8 output is.
            squashed = F.interpolate(x, (s, s), mode=self.semantic.resample, antialias=True, align_corners=False)
            sem.append(self._normalise(squashed.clamp(0, 1), self.semantic))
            scale = side / max(h, w)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            resized.append((nh, nw))
            y = self._normalise(F.interpolate(x, (nh, nw), mode="bilinear", antialias=True, align_corners=False),
                                self.pixel)
            pix.append(F.pad(y, (0, side - nw, 0, side - nh)))
        return {
            "semantic_pixels": torch.cat(sem),
            "sam_pixels": torch.cat(pix),
            "resized_sizes": torch.tensor(resized, dtype=torch.long),
            "original_sizes": torch.tensor(original, dtype=torch.long),
        }

    # ---- batches ----------------------------------------------------------------------------------
    def __call__(self, batch: dict) -> dict[str, Tensor]:
        """A collated training/eval batch (images uint8 Bx3xHxW, masks, conversations) -> model inputs."""
        out = self.pad([self.encode(c) for c in batch["conversations"]])
        out.update(self.preprocess_images(list(batch["images"])))
        if "masks" in batch:
            out["masks"] = torch.as_tensor(batch["masks"]).float()
        if "has_mask" in batch:
            out["has_mask"] = torch.as_tensor(batch["has_mask"]).bool()
        return out
