"""Turning whatever a user hands us (paths, folders, globs, PIL images, arrays, tensors) into uint8 RGB arrays.

Every failure is an `ImageLoadError` that names the input, so a batch job can report the one bad file
and carry on with the rest. Disk images go through `agvas.io`, the reader the training data used,
so a 16-bit or RGBA file is normalised at test time exactly as it was at training time.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agvas.io import DataError, read_image_rgb, to_rgb_array

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
_GLOB_CHARS = frozenset("*?[")


class ImageLoadError(DataError):
    """An input that cannot be used as an image; the message starts with the input's name."""


@dataclass
class ExpandedInputs:
    """Image files found for a list of command-line inputs, and the inputs that yielded none."""

    paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _is_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def expand_paths(items: Iterable[str | os.PathLike]) -> ExpandedInputs:
    """Files are taken as given; folders contribute their image files (not recursively, sorted); globs
    (`**` allowed) contribute matching image files. Duplicates are dropped, first occurrence wins.

    A folder or glob without images, or a missing file, is a problem, not an exception: callers that
    process many inputs report it and go on.
    """
    out = ExpandedInputs()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.paths.append(path)

    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            children = sorted(path.iterdir())
            found = [p for p in children if is_image_file(p)]
            # A folder named like an image was most likely meant as one: name it rather than pass over it.
            out.problems.extend(f"{p}: is a folder, not an image (folders are not searched recursively)"
                                for p in children if p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                out.problems.append(f"{text}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for p in found:
                add(p)
        elif not path.exists() and _is_glob(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image_file(Path(p)))
            if not found:
                out.problems.append(f"{text}: pattern matches no image files")
            for p in found:
                add(p)
        elif not path.exists():
            out.problems.append(f"{text}: file not found")
        else:
            add(path)
    return out


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Bring any numeric array to 0..255: floats in [0, 1] are scaled by 255, other ranges by min-max."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return (a * 255.0).round().astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return a.round().astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((a - lo) * scale).round().clip(0, 255).astype(np.uint8)


def array_to_rgb(arr: np.ndarray, name: str = "array") -> np.ndarray:
    """HxW, HxWx{1,3,4} (or unambiguous {1,3,4}xHxW) of any numeric dtype -> uint8 HxWx3 RGB."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # channels-first, as from torch
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageLoadError(f"{name}: expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"{name}: empty image of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ImageLoadError(f"{name}: unsupported dtype {arr.dtype}")
    try:
        arr = _scale_to_uint8(arr)
    except ValueError as err:
        raise ImageLoadError(f"{name}: {err}") from None
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if arr.shape[2] == 4:  # the same alpha handling as files read from disk
        return to_rgb_array(Image.fromarray(np.ascontiguousarray(arr)))
    return np.ascontiguousarray(arr)


def load_image(item: Any, name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
    """One input (path, PIL image, numpy array, torch tensor) as uint8 HxWx3 RGB.

    A file whose header claims more than `max_pixels` pixels is refused before it is decoded (None: only
    Pillow's decompression-bomb limit); commands pass their --max-pixels here.
    """
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if path.is_dir():
            raise ImageLoadError(f"{path}: is a folder; pass its images (or the folder to expand_paths)")
        try:
            arr = read_image_rgb(path, max_pixels)
        except DataError as err:
            raise ImageLoadError(str(err)) from None
        return arr if arr.flags.writeable else arr.copy()  # PIL-backed arrays are read-only; torch warns
    label = name or type(item).__name__
    if isinstance(item, Image.Image):
        try:
            arr = to_rgb_array(item)
            return arr if arr.flags.writeable else arr.copy()
        except (OSError, ValueError) as err:
            raise ImageLoadError(f"{label}: cannot convert PIL image ({err})") from None
    if isinstance(item, np.ndarray):
        return array_to_rgb(item, label)
    try:
        import torch

        if isinstance(item, torch.Tensor):
            return array_to_rgb(item.detach().cpu().numpy(), label)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    raise ImageLoadError(f"{label}: not an image (expected a path, PIL image, numpy array or tensor)")


def input_name(item: Any, index: int) -> str:
    """How an input is named in results and errors: its path, or its kind and position."""
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    return f"<{type(item).__name__} #{index}>"


def as_input_list(images: Any) -> list[Any]:
    """One image or many -> a flat list; strings and paths naming folders or globs are expanded.

    A single numpy array or tensor is one image, never a list of rows. A folder or glob with no
    images is an error here: an API call that silently segments nothing would hide the mistake.
    """
    single = (str, os.PathLike, np.ndarray, Image.Image)
    try:
        import torch

        single = (*single, torch.Tensor)
    except ImportError:  # pragma: no cover
        pass
    items: Sequence[Any] = [images] if isinstance(images, single) else list(images)
    out: list[Any] = []
    for item in items:
        if isinstance(item, str | os.PathLike) and (Path(item).is_dir() or
                                                     (not Path(item).exists() and _is_glob(os.fspath(item)))):
            expanded = expand_paths([item])
            if expanded.problems:
                raise ImageLoadError("; ".join(expanded.problems))
            out.extend(expanded.paths)
        else:
            out.append(item)
    return out
