"""The web page's example images: small synthetic defects drawn deterministically from agvas.data.synth.

`python -m agvas.serve.examples [FOLDER]` rewrites them (and examples.json, which the page reads);
the same seeds give the same pictures. They are 192 px a side so each PNG stays under 100 KB.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agvas.data.synth import generate_sample
from agvas.io import atomic_write_bytes, save_png

EXAMPLES_DIR = Path(__file__).resolve().parent / "static" / "examples"
SIZE = 192
SEEDS = range(12)
"""Each example keeps the seed (of these) whose defect covers the most area, so it is visible."""


@dataclass(frozen=True)
class Example:
    name: str
    family: str
    defect: str | None
    title: str
    expectation: str


EXAMPLES: tuple[Example, ...] = (
    Example("metal_hole", "metal", "hole", "Metal, hole",
            "A normal metal surface is evenly brushed, with no holes, dents or marks."),
    Example("wood_crack", "wood", "crack", "Wood, crack",
            "Normal wood shows a continuous grain of even colour, without cracks or breaks."),
    Example("parts_contamination", "square_parts", "contamination", "Parts, contamination",
            "A normal tray of parts holds identical, clean parts in a regular layout."),
    Example("marble_good", "marble", None, "Marble, no defect",
            "Normal marble has smooth veins and uniform tone, without stains, holes or cracks."),
)


def draw(example: Example) -> tuple[np.ndarray, int]:
    """The example's image and the seed that made it."""
    best: tuple[float, int, np.ndarray] | None = None
    for seed in SEEDS if example.defect else SEEDS[:1]:
        sample = generate_sample(np.random.default_rng(seed), example.family, example.defect, size=SIZE)
        area = float(sample.mask.mean())
        if best is None or area > best[0]:
            best = (area, seed, sample.image)
    assert best is not None
    return best[2], best[1]


def write_examples(folder: str | Path = EXAMPLES_DIR) -> list[dict]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for example in EXAMPLES:
        image, seed = draw(example)
        save_png(folder / f"{example.name}.png", image)
        manifest.append({"file": f"{example.name}.png", "title": example.title, "family": example.family,
                         "defect": example.defect or "good", "seed": seed, "expectation": example.expectation})
    atomic_write_bytes(folder / "examples.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


if __name__ == "__main__":
    for entry in write_examples(sys.argv[1] if len(sys.argv) > 1 else EXAMPLES_DIR):
        print(entry["file"], "seed", entry["seed"])
