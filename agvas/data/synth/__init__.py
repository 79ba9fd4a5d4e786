"""Synthetic anomalies: our stand-in for DTD-Synthetic and Anomaly-Seg20K.

Procedural surfaces (real DTD textures, photographs of good parts) receive one structured local
defect with an exact mask, while every image, normal or anomalous, gets the same kind of nuisance variation.
Entry points:

* `generate_sample(rng, family, defect, size, textures)` -> `SynthSample` (on-the-fly training);
* `split_categories(...)` / `CategorySplit.draw(...)` -> zero-shot holdout of families and kinds;
* `generate_dataset(out, n, seed, ...)` -> a dataset folder with `meta.json` (`agvas data synth`).
"""

from agvas.data.synth.categories import (
    DEFAULT_HOLDOUT_DEFECTS,
    DEFAULT_HOLDOUT_FAMILIES,
    CategorySplit,
    split_categories,
)
from agvas.data.synth.defects import DEFECTS
from agvas.data.synth.describe import describe_mask
from agvas.data.synth.generate import SYNTH_META_FILE, SynthSummary, generate_dataset, sample_at
from agvas.data.synth.sample import GOOD, SynthesisError, SynthSample, generate_sample
from agvas.data.synth.textures import PROCEDURAL, PhotoBank, TextureBank, family_names

DEFECT_KINDS: tuple[str, ...] = tuple(DEFECTS)
PROCEDURAL_FAMILIES: tuple[str, ...] = tuple(PROCEDURAL)

__all__ = [
    "DEFAULT_HOLDOUT_DEFECTS",
    "DEFAULT_HOLDOUT_FAMILIES",
    "DEFECT_KINDS",
    "GOOD",
    "PROCEDURAL_FAMILIES",
    "SYNTH_META_FILE",
    "CategorySplit",
    "SynthSample",
    "SynthSummary",
    "SynthesisError",
    "PhotoBank",
    "TextureBank",
    "describe_mask",
    "family_names",
    "generate_dataset",
    "generate_sample",
    "sample_at",
    "split_categories",
]
