"""The vocabulary AG-VAS adds to the LMM and the answer strings built from it.

Kept at the bottom of the package so that both the data pipeline (which writes answers) and the
model (which adds the tokens and finds them) read the same strings.
"""

from __future__ import annotations

import re
from typing import Final

NOR: Final = "[NOR]"
ANO: Final = "[ANO]"
SEG: Final = "[SEG]"
ANCHOR_TOKENS: Final[tuple[str, ...]] = (NOR, ANO, SEG)

IMAGE_PLACEHOLDER: Final = "<image>"
"""Marks where the image goes in a user turn; the model expands it into visual tokens."""

DIRECT_INSTRUCTION: Final = "Please segment the anomalies in this image."


def anchor_string(anchors: tuple[str, ...] = ANCHOR_TOKENS) -> str:
    """The anchors as they appear in an answer, in the paper's order ([NOR][ANO][SEG])."""
    return "".join(a for a in ANCHOR_TOKENS if a in anchors)


def direct_answer(anchors: tuple[str, ...] = ANCHOR_TOKENS) -> str:
    """The paper's implicit-mode answer: "Sure, it is [NOR][ANO][SEG]." for the full model."""
    return f"Sure, it is {anchor_string(anchors)}."


_ANCHOR_RUN = re.compile(r"\s*(?:" + "|".join(re.escape(t) for t in ANCHOR_TOKENS) + r")+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")


def readable_answer(text: str) -> str:
    """The answer as a person reads it: the anchor tokens are the model's internal handles on the mask,
    not words, so they are dropped ("Sure, it is [NOR][ANO][SEG]." reads "Sure, it is.")."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(_ANCHOR_RUN.sub(" ", text).split()))
