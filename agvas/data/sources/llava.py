"""LLaVA-Instruct-150K: `llava_instruct_150k.json` (a list of {"id", "image", "conversations": [{"from":
"human"|"gpt", "value"}, ...]}) + COCO train2017 images. The VQA source of the paper: it keeps the LMM
talking. Turns become {"role": "user"|"assistant"}; the `<image>` token, wherever LLaVA put it in the first
question, moves to the front, as every other source has it. A record that does not alternate human/gpt,
has `<image>` in a later turn or an anchor token in its text is listed as bad when indexed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agvas.anchors import ANCHOR_TOKENS, IMAGE_PLACEHOLDER
from agvas.data.sources.base import Reader
from agvas.io import DataError, read_image_rgb, read_json

_ROLES = {"human": "user", "gpt": "assistant"}


def convert_conversation(raw: Any, anchors: tuple[str, ...] = ANCHOR_TOKENS) -> list[dict[str, str]]:
    """LLaVA's turns as ours, or ValueError saying what is wrong with them."""
    if not isinstance(raw, list) or len(raw) < 2:
        raise ValueError("conversations must be a list of at least two turns")
    turns = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or t.get("from") not in _ROLES or not isinstance(t.get("value"), str):
            raise ValueError(f"turn {i} needs 'from' (human/gpt) and a string 'value'")
        role = _ROLES[t["from"]]
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise ValueError(f"turn {i} is from {t['from']!r}; turns must alternate human, gpt, ...")
        text = t["value"]
        if any(a in text for a in anchors):
            raise ValueError(f"turn {i} contains an anchor token")
        if i == 0:
            text = f"{IMAGE_PLACEHOLDER}\n" + text.replace(IMAGE_PLACEHOLDER, "").strip()
        elif IMAGE_PLACEHOLDER in text:
            raise ValueError(f"turn {i} holds {IMAGE_PLACEHOLDER}; only the first question may")
        turns.append({"role": role, "content": text})
    if len(turns) % 2:
        turns = turns[:-1]
    return turns


class LlavaInstructReader(Reader):
    kind = "llava-instruct"

    def __init__(self, root: str | os.PathLike, images: str | os.PathLike | None = None,
                 file: str = "llava_instruct_150k.json", name: str | None = None,
                 anchors: tuple[str, ...] = ANCHOR_TOKENS) -> None:
        super().__init__(name)
        root = Path(root)
        path = root if root.is_file() else root / file
        if not path.is_file():
            raise DataError(f"{path}: LLaVA-Instruct JSON not found")
        self.image_root = Path(images) if images else path.parent.parent / "coco" / "train2017"
        doc = read_json(path)
        if not isinstance(doc, list):
            raise DataError(f"{path}: expected a list of records")
        for i, rec in enumerate(doc):
            where = f"{path}: record {i} (id {rec.get('id') if isinstance(rec, dict) else '?'})"
            try:
                if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
                    raise ValueError("no 'image'")
                turns = convert_conversation(rec.get("conversations"), tuple(anchors))
            except ValueError as err:
                self.problems.add(where, f"{where}: {err}")
                continue
            self.items.append((rec["image"], turns))
        self._require_items(path)

    def describe(self, index: int) -> str:
        return str(self.image_root / self.items[index][0])

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        image_name, turns = self.items[index]
        image = read_image_rgb(self.image_root / image_name)
        return {"image": image, "mask": np.zeros(image.shape[:2], dtype=np.uint8),
                "conversation": [dict(t) for t in turns], "has_mask": False, "source": "vqa", "anomalous": False}
