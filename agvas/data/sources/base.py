"""What every reader of a published training source shares: an index, tolerant loading, skip counts.

A 30-hour run must not die at hour 5 on one truncated JPEG, and must not hide it either. Each reader
indexes its files once (problems found then are *bad at index time*), loads a sample only when drawn,
and on a bad file names it, counts it and draws the next one. The counts live in a per-process
registry (`skip_counts`) that the trainer's collate function snapshots into every batch, so log.csv
gets `skips/<source>` whether the samples were built in the main process or in loader workers.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agvas.data.meta import Entry, load_sample
from agvas.data.mixture import PoolItem
from agvas.io import DataError

_SKIPS: Counter[str] = Counter()
_NAMED: set[tuple[str, str]] = set()


def register_source(name: str) -> None:
    """Make `name` appear in the counts (at 0) before its first skip, so log.csv has its column."""
    _SKIPS[name] += 0


def record_skip(name: str, file: str, why: str, warn: bool = True) -> None:
    """Count one bad draw of source `name`; each bad file is printed once per process."""
    _SKIPS[name] += 1
    if warn and (name, file) not in _NAMED:
        _NAMED.add((name, file))
        print(f"warning: {name}: skipped {why}", file=sys.stderr)


def skip_counts() -> dict[str, int]:
    """Bad draws so far in this process, per source name (registered sources included at 0)."""
    return dict(_SKIPS)


def reset_skip_counts() -> None:
    _SKIPS.clear()
    _NAMED.clear()


@dataclass
class Problems:
    """Files found bad while indexing or loading: path -> why (each once), for reports."""

    items: dict[str, str] = field(default_factory=dict)
    loaded_bad: int = 0
    """How many of them failed when loaded (the rest were rejected by the index)."""

    def add(self, file: str | os.PathLike, why: str) -> None:
        self.items.setdefault(str(file), why)

    def __len__(self) -> int:
        return len(self.items)


class Reader:
    """A list of samples indexed up front, built on demand by `load(i, rng)`, tolerant of bad files.

    Subclasses fill `self.items` in `__init__` (and `self.problems` with what the index rejected) and
    implement `load`, raising DataError naming the file for anything unusable.
    """

    kind = "reader"
    max_tries = 32

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind
        self.items: list[Any] = []
        self.problems = Problems()
        register_source(self.name)

    def __len__(self) -> int:
        return len(self.items)

    def _require_items(self, where: str | os.PathLike) -> None:
        if not self.items:
            bad = f"; {len(self.problems)} bad, e.g. {next(iter(self.problems.items.items()))}" if self.problems else ""
            raise DataError(f"{where}: {self.name} found no usable samples{bad}")

    def load(self, index: int, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def check(self, index: int) -> None:
        """Load item `index` once (for `agvas data check`); raises DataError if it is bad."""
        self.load(index, np.random.default_rng(index))

    def describe(self, index: int) -> str:
        """The file that stands for item `index` in messages."""
        return str(self.items[index])

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A mixture sample (general, VQA readers); pools are drawn with `draw` instead."""
        return self.draw(rng)

    def draw(self, rng: np.random.Generator, pick: Callable[[np.random.Generator], int] | None = None) -> Any:
        """Load a random item; a bad one is recorded and the next drawn, up to `max_tries` in a row."""
        for _ in range(self.max_tries):
            index = pick(rng) if pick is not None else int(rng.integers(len(self.items)))
            try:
                return self.load(index, rng)
            except DataError as err:
                self.problems.add(self.describe(index), str(err))
                record_skip(self.name, self.describe(index), str(err))
        raise DataError(f"{self.name}: {self.max_tries} bad samples in a row; e.g. "
                        f"{list(self.problems.items.values())[-3:]}")


class EntryPool(Reader):
    """Anomaly images given as meta.json-like entries (paths relative to `root`), drawn as `PoolItem`s.

    Behaves like `MetaPool.draw` (normal with probability `normal_rate` when both kinds exist, then the
    real-image augmentation), but a bad file is skipped and counted instead of ending the run.
    """

    def __init__(self, root: str | os.PathLike, entries: list[Entry], name: str,
                 augment: Callable[[np.ndarray, np.ndarray, np.random.Generator],
                                   tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        super().__init__(name)
        self.root = Path(root)
        self.items = list(entries)
        self.anomalous = [i for i, e in enumerate(self.items) if e.anomalous]
        self.normal = [i for i, e in enumerate(self.items) if not e.anomalous]
        self.augment = augment

    def describe(self, index: int) -> str:
        return str(self.root / self.items[index].img_path)

    def load(self, index: int, rng: np.random.Generator) -> PoolItem:
        e = self.items[index]
        s = load_sample(self.root, e)
        if e.anomalous and not s.mask.any():
            raise DataError(f"{self.root / e.mask_path}: the mask of a defective image is empty")
        image, mask = s.image, s.mask
        if self.augment is not None:
            image, mask = self.augment(image, mask, rng)
        return PoolItem(image, mask, s.cls_name, s.anomalous and bool(mask.any()), e.img_path)

    def draw(self, rng: np.random.Generator, normal_rate: float | None = None) -> PoolItem:  # type: ignore[override]
        def pick(r: np.random.Generator) -> int:
            if normal_rate is None or not self.anomalous or not self.normal:
                return int(r.integers(len(self.items)))
            kind = self.normal if r.random() < normal_rate else self.anomalous
            return kind[int(r.integers(len(kind)))]
        return super().draw(rng, pick)


IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted (hidden files left out)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
