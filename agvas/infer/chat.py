"""Multi-turn dialogue about one image, as in the paper's interactive examples and LISA's chat.

The image is encoded once per session; each turn re-runs the LLM over the whole history (prefill +
greedy decoding), which keeps the code simple and is cheap next to the encoders. A turn whose answer
holds the anchors yields a mask; the anchors are looked up in that turn's answer only, so an earlier
turn's anchors in the history never produce a stale mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from agvas.anchors import IMAGE_PLACEHOLDER
from agvas.infer.images import input_name, load_image
from agvas.infer.result import SegmentationResult


class DialogueRunner(Protocol):
    """What a dialogue needs of a Segmenter. Named here, so that this module does not import
    segmenter.py, which imports it for `Segmenter.chat`."""

    def prepare_images(self, arrays: Sequence[np.ndarray]) -> dict[str, Tensor]: ...

    def encode_images(self, pixels: dict[str, Tensor]) -> tuple[Tensor, Tensor]: ...

    def segment_generated(self, arrays: Sequence[np.ndarray], conversations: Sequence[list[dict[str, str]]],
                          mode: str, names: Sequence[str | None], max_new_tokens: int = ...,
                          features: tuple[dict[str, Tensor], Tensor, Tensor] | None = None,
                          ) -> list[SegmentationResult]: ...


class ChatSession:
    """`ChatSession(segmenter, image).ask(text) -> SegmentationResult`, keeping the history."""

    def __init__(self, segmenter: DialogueRunner, image: Any, max_new_tokens: int = 256) -> None:
        self.segmenter = segmenter
        self.source = input_name(image, 0)
        self.image = load_image(image, self.source)
        self.max_new_tokens = max_new_tokens
        self.history: list[dict[str, str]] = []
        self._features = None

    @property
    def turns(self) -> int:
        return sum(m["role"] == "user" for m in self.history)

    def reset(self) -> None:
        """Forget the dialogue (the image features are kept)."""
        self.history = []

    def ask(self, text: str) -> SegmentationResult:
        text = text.strip()
        if not text:
            raise ValueError("empty question")
        if IMAGE_PLACEHOLDER in text:
            raise ValueError(f"{IMAGE_PLACEHOLDER} is reserved: the image is already part of the dialogue")
        content = f"{IMAGE_PLACEHOLDER}\n{text}" if not self.history else text
        messages = [*self.history, {"role": "user", "content": content}]
        if self._features is None:
            with torch.inference_mode():
                pixels = self.segmenter.prepare_images([self.image])
                self._features = (pixels, *self.segmenter.encode_images(pixels))
        result = self.segmenter.segment_generated([self.image], [messages], "chat", [self.source],
                                                  self.max_new_tokens, features=self._features)[0]
        self.history = [*messages, {"role": "assistant", "content": result.text}]
        return result
