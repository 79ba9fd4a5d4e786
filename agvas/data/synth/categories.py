"""Which (family, defect kind) categories belong to training and which to the zero-shot test.

The rule, chosen so that the test split measures generalisation to *unseen* categories:

* train: families that are not held out, combined with kinds that are not held out; normal images
  from the non-held-out families;
* test: every pair with a held-out family (any kind) or a held-out kind (any family); normal
  images from the held-out families, or from all families when only kinds are held out (a normal
  image has no kind, and the test split still needs normals to measure false alarms);
* nothing held out at all: both splits use every category (an in-domain check, not zero-shot).

So no training image shows a held-out family, and no training defect is of a held-out kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: The holdout the training and evaluation recipes use: one procedural family with a strong regular
#: structure, two real textures unlike the rest, and the one kind that is a deformation rather than
#: a paint-over.
DEFAULT_HOLDOUT_FAMILIES: tuple[str, ...] = ("grid", "dtd_crystalline", "dtd_bubbly")
DEFAULT_HOLDOUT_DEFECTS: tuple[str, ...] = ("fold",)
SPLIT_NAMES = ("train", "test")


@dataclass(frozen=True)
class CategorySplit:
    """The categories of each split. `ignored`: holdout names that are not among the families/kinds."""

    train_pairs: tuple[tuple[str, str], ...]
    train_normals: tuple[str, ...]
    test_pairs: tuple[tuple[str, str], ...]
    test_normals: tuple[str, ...]
    holdout_families: tuple[str, ...] = ()
    holdout_defects: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())

    def pairs(self, split: str) -> tuple[tuple[str, str], ...]:
        return self.train_pairs if _check(split) == "train" else self.test_pairs

    def normals(self, split: str) -> tuple[str, ...]:
        return self.train_normals if _check(split) == "train" else self.test_normals

    def draw(self, rng: np.random.Generator, split: str, normal_fraction: float) -> tuple[str, str | None]:
        """A (family, kind) for one image of `split`; kind None means a normal image.

        Anomalous images are uniform over pairs, so every held-out combination is equally present.
        """
        pairs, normals = self.pairs(split), self.normals(split)
        if not pairs and not normals:
            raise ValueError(f"split {split!r} has no categories")
        if normals and (not pairs or rng.random() < normal_fraction):
            return normals[int(rng.integers(len(normals)))], None
        family, kind = pairs[int(rng.integers(len(pairs)))]
        return family, kind


def _check(split: str) -> str:
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    return split


def split_categories(families: Sequence[str], defects: Sequence[str],
                     holdout_families: Iterable[str] = DEFAULT_HOLDOUT_FAMILIES,
                     holdout_defects: Iterable[str] = DEFAULT_HOLDOUT_DEFECTS) -> CategorySplit:
    """Partition categories by the module's rule; holdout names absent from the lists are reported
    in `ignored` (the default names real-texture families that exist only with a texture folder)."""
    fam, kinds = list(dict.fromkeys(families)), list(dict.fromkeys(defects))
    hf_in, hd_in = list(holdout_families), list(holdout_defects)
    hf = tuple(f for f in fam if f in hf_in)
    hd = tuple(d for d in kinds if d in hd_in)
    ignored = tuple(x for x in hf_in if x not in fam) + tuple(x for x in hd_in if x not in kinds)
    if not hf and not hd:
        every = tuple((f, d) for f in fam for d in kinds)
        return CategorySplit(every, tuple(fam), every, tuple(fam), (), (), ignored)
    seen_f = [f for f in fam if f not in hf]
    seen_d = [d for d in kinds if d not in hd]
    train = tuple((f, d) for f in seen_f for d in seen_d)
    test = tuple((f, d) for f in fam for d in kinds if f in hf or d in hd)
    return CategorySplit(train, tuple(seen_f), test, hf if hf else tuple(fam), hf, hd, ignored)
