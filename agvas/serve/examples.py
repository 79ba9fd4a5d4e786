"""The web page's example images: synthetic defects drawn deterministically from agvas.data.synth, and a
few real photographs from VisA (CC BY 4.0), a set the shipped checkpoint never trained on.

`python -m agvas.serve.examples [FOLDER] [--visa VISA_ROOT]` rewrites them and examples.json, which the
page reads; the same seeds give the same synthetic pictures, and without --visa the real ones already in
FOLDER are kept. All are small JPEGs, so the whole set stays well under 300 KB in the repository.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from agvas.data.synth import generate_sample
from agvas.io import atomic_write_bytes, read_json

EXAMPLES_DIR = Path(__file__).resolve().parent / "static" / "examples"
SIZE = 192
"""Synthetic examples are SIZE px a side; real ones SIZE px high (VisA is 3:2)."""
QUALITY = 90
SEEDS = range(12)
"""Each synthetic example keeps the seed (of these) whose defect covers the most area, so it is visible."""
VISA_CREDIT = "VisA (Zou et al., ECCV 2022; Amazon), CC BY 4.0, resized"


@dataclass(frozen=True)
class Example:
    name: str
    family: str
    defect: str | None
    title: str
    expectation: str


@dataclass(frozen=True)
class RealExample:
    name: str
    source: str
    """The photograph's path inside a VisA root as ../shared/data/visa holds it."""
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
REAL_EXAMPLES: tuple[RealExample, ...] = (
    RealExample("visa_capsules_defect", "capsules/Data/Images/Anomaly/057.JPG", "defect",
                "Capsules, defect (real)",
                "Normal capsules are whole, evenly green and translucent, with no dents, marks or leaks."),
    RealExample("visa_macaroni_defect", "macaroni1/Data/Images/Anomaly/013.JPG", "defect",
                "Macaroni, defect (real)",
                "A normal macaroni piece is a smooth, even, unbroken half-ring of uniform colour."),
    RealExample("visa_macaroni_good", "macaroni1/Data/Images/Normal/0000.JPG", None,
                "Macaroni, no defect (real)",
                "A normal macaroni piece is a smooth, even, unbroken half-ring of uniform colour."),
)
SOURCE_SETS = ("visa",)
"""The datasets the real examples come from: the shipped checkpoint must not have trained on them."""


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


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def write_examples(folder: str | Path = EXAMPLES_DIR, visa_root: str | Path | None = None) -> list[dict]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for example in EXAMPLES:
        image, seed = draw(example)
        atomic_write_bytes(folder / f"{example.name}.jpg", jpeg_bytes(Image.fromarray(image)))
        manifest.append({"file": f"{example.name}.jpg", "title": example.title, "family": example.family,
                         "defect": example.defect or "good", "seed": seed, "expectation": example.expectation,
                         "source": "synthetic (agvas.data.synth)"})
    kept = {e["file"]: e for e in read_json(folder / "examples.json")} if (folder / "examples.json").exists() else {}
    for real in REAL_EXAMPLES:
        name = f"{real.name}.jpg"
        if visa_root is not None:
            with Image.open(Path(visa_root) / real.source) as photo:
                width = round(photo.width * SIZE / photo.height)
                atomic_write_bytes(folder / name, jpeg_bytes(photo.resize((width, SIZE), Image.Resampling.LANCZOS)))
        elif name not in kept:
            continue  # never written here, and no VisA root to write it from
        manifest.append({"file": name, "title": real.title, "family": real.source.split("/")[0],
                         "defect": real.defect or "good", "expectation": real.expectation,
                         "source": f"{VISA_CREDIT}: {real.source}"})
    atomic_write_bytes(folder / "examples.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


if __name__ == "__main__":
    args = sys.argv[1:]
    visa = None
    if "--visa" in args:
        at = args.index("--visa")
        visa = args[at + 1]
        del args[at:at + 2]
    for entry in write_examples(args[0] if args else EXAMPLES_DIR, visa):
        print(entry["file"], entry.get("seed", entry["source"]))
