"""What every converter shares: the pair it finds, the reasons it skips one, and folder helpers.

A converter only *finds* things: `scan(src)` walks the publisher's layout and returns one `Pair`
per image (or a `Skip` where the layout itself shows a problem, such as an image whose ground
truth was never published). Reading, validating and placing the files is the pipeline's job
(`agvas.data.converters.pipeline`), so that every dataset gets the same checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from agvas.io import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
MASK_STEM_SUFFIXES = ("_mask", "_gt", "_segmentation")
NORMAL_SPECIE = "good"

# Reasons a file is left out; the summary groups skips by these.
UNREADABLE_IMAGE = "unreadable image"
UNREADABLE_MASK = "unreadable mask"
MISSING_MASK = "missing mask"
SIZE_MISMATCH = "mask size differs from image"
EMPTY_MASK = "empty mask for an anomalous image"
NO_GROUND_TRUTH = "no ground truth"


class LayoutError(DataError):
    """SRC is missing or does not look like the dataset that was named: nothing can be converted."""


class NothingValidError(DataError):
    """The layout was right but every pair was skipped, so no meta.json was written."""


@dataclass(frozen=True)
class Pair:
    """One image as the layout describes it, before any file is opened.

    `anomaly` is what the layout says: True (the mask must mark something), False (normal; any mask
    is ignored) or None (the mask decides: empty means normal, as in KSDD2 where every image has a GT;
    `specie_name` then names the anomalous case and a normal outcome is called "good").
    """

    image: Path
    mask: Path | None
    cls_name: str
    specie_name: str
    anomaly: bool | None
    split: str = "test"


@dataclass(frozen=True)
class Skip:
    """A file left out, with the reason (for the summary) and a message naming the file (for people)."""

    path: str
    reason: str
    detail: str
    by_design: bool = False
    """The publisher ships this file without what we need (e.g. CrackForest's 37 images without ground
    truth): reported, but the conversion still counts as complete."""


@dataclass(frozen=True)
class MaskData:
    """A binarised mask, and whether its file can be linked as-is (a 0/255 greyscale PNG)."""

    mask: np.ndarray
    linkable: bool


def read_binary_mask(path: Path, threshold: int = 128) -> MaskData:
    """Binarise any mask file: 0/1 masks by >0, grey levels (JPEG, 0/255, 0/k labels) by `threshold`.

    Reads the whole file, because a truncated or odd-valued mask only shows itself in the pixels.
    """
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode = im.format, im.mode
            raw = np.asarray(im if mode in ("1", "L", "I", "I;16", "I;16B", "I;16L") else im.convert("L"))
    except FileNotFoundError:
        raise FileNotFoundError(path) from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read mask ({err})") from None
    if raw.dtype == bool:
        return MaskData(raw.astype(np.uint8), False)
    if raw.ndim != 2:
        raise DataError(f"{path}: mask has shape {raw.shape}, expected a single-channel image")
    binary = (raw > 0) if raw.max(initial=0) <= 1 else (raw >= threshold)
    linkable = fmt == "PNG" and mode == "L" and bool(np.all((raw == 0) | (raw == 255)))
    return MaskData(binary.astype(np.uint8), linkable)


class Converter:
    """One dataset's layout. Subclasses set the class attributes and implement `scan`."""

    name: ClassVar[str]
    title: ClassVar[str]
    # What the publisher ships, quoted in errors when SRC does not match.
    layout: ClassVar[str]
    mask_threshold: ClassVar[int] = 128

    def scan(self, src: Path) -> list[Pair | Skip]:
        raise NotImplementedError

    def read_mask(self, path: Path) -> MaskData:
        return read_binary_mask(path, self.mask_threshold)

    def layout_error(self, problem: str) -> LayoutError:
        return LayoutError(f"{problem}; {self.title} ships {self.layout}")


# ---------------------------------------------------------------- folder helpers


def _visible(path: Path) -> bool:
    # macOS archives carry `._name` resource forks and `.DS_Store`; they are never data.
    return not path.name.startswith(".")


def list_images(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in `folder`, sorted by name so that meta.json is reproducible."""
    allowed = {s.lower() for s in suffixes}
    return sorted(
        (p for p in folder.iterdir() if _visible(p) and p.suffix.lower() in allowed and p.is_file()),
        key=lambda p: p.name,
    )


def subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _visible(p) and p.is_dir()), key=lambda p: p.name)


def find_dir(parent: Path, *names: str) -> Path | None:
    """The first child folder whose name matches one of `names`, ignoring case and `-`/`_`/space."""

    def norm(s: str) -> str:
        return re.sub(r"[\s_\-]+", "", s.lower())

    children = {norm(p.name): p for p in subdirs(parent)}
    for name in names:
        if norm(name) in children:
            return children[norm(name)]
    return None


def mask_key(stem: str) -> str:
    """The image stem a mask belongs to: `x_mask`, `x_gt`, `x_GT`, `x_segmentation` all mean `x`."""
    low = stem.lower()
    for suffix in MASK_STEM_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def index_masks(folder: Path) -> dict[str, Path]:
    """Masks in `folder` by the image stem they belong to; an exact stem wins over a suffixed one."""
    index: dict[str, Path] = {}
    files = list_images(folder)
    for path in files:
        index.setdefault(mask_key(path.stem), path)
    for path in files:  # `x.png` next to `x_mask.png`: the exact name is the mask of `x`
        if mask_key(path.stem) != path.stem:
            continue
        index[path.stem] = path
    return index


def require_dir(src: Path, converter: Converter, *names: str) -> Path:
    """Find a required child folder or raise a layout error naming it."""
    found = find_dir(src, *names)
    if found is None:
        raise converter.layout_error(f"no {names[0]}/ folder in {src}")
    return found
