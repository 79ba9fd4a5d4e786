"""The dataset description every tool reads: one `meta.json` per dataset root (Bayes-PFL's layout).

```
{"train": {cls: [entry, ...]}, "test": {cls: [entry, ...]}}
entry = {"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}
```
Paths are relative to the dataset root; a normal image has an empty `mask_path` and `anomaly` 0.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from agvas.io import DataError, atomic_write_json, read_image_rgb, read_json, read_mask

META_FILE = "meta.json"
SPLITS = ("train", "test")
_FIELDS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


@dataclass(frozen=True)
class Entry:
    """One line of `meta.json`."""

    img_path: str
    mask_path: str
    cls_name: str
    specie_name: str
    anomaly: int

    @property
    def anomalous(self) -> bool:
        return bool(self.anomaly)


@dataclass
class Sample:
    """An entry with its pixels loaded: image uint8 HxWx3 RGB, mask uint8 HxW in {0,1}."""

    image: np.ndarray
    mask: np.ndarray
    cls_name: str
    specie_name: str
    anomalous: bool
    img_path: str


def write_meta(root: str | os.PathLike, test: dict[str, list[Entry]],
               train: dict[str, list[Entry]] | None = None) -> Path:
    """Write `root/meta.json` atomically, so that a crash never leaves half a description behind."""
    root = Path(root)
    doc = {
        "train": {c: [asdict(e) for e in es] for c, es in sorted((train or {}).items())},
        "test": {c: [asdict(e) for e in es] for c, es in sorted(test.items())},
    }
    path = root / META_FILE
    atomic_write_json(path, doc)
    return path


def _entry(raw: object, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with {', '.join(_FIELDS)}, got {type(raw).__name__}")
    missing = [f for f in _FIELDS if f not in raw]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    try:
        anomaly = int(raw["anomaly"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'anomaly' must be 0 or 1, got {raw['anomaly']!r}") from None
    if anomaly not in (0, 1):
        raise DataError(f"{where}: 'anomaly' must be 0 or 1, got {anomaly}")
    if anomaly and not raw["mask_path"]:
        raise DataError(f"{where}: anomalous entry without a mask_path")
    return Entry(str(raw["img_path"]), str(raw["mask_path"] or ""), str(raw["cls_name"]),
                 str(raw["specie_name"]), anomaly)


def load_meta(root: str | os.PathLike, split: str = "test") -> dict[str, list[Entry]]:
    """Read and validate one split of `root/meta.json`: class name -> entries."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(root) / META_FILE
    if not path.is_file():
        raise DataError(f"{path}: no meta.json here; create one with `agvas data prepare`")
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get(split, {}), dict):
        raise DataError(f"{path}: expected {{'train': {{cls: [...]}}, 'test': {{cls: [...]}}}}")
    out: dict[str, list[Entry]] = {}
    for cls, raws in doc.get(split, {}).items():
        if not isinstance(raws, list):
            raise DataError(f"{path}: {split}/{cls} must be a list of entries")
        out[cls] = [_entry(r, f"{path}: {split}/{cls}[{i}]") for i, r in enumerate(raws)]
    return out


def _outside(path: str) -> bool:
    """Whether a meta.json path leaves the root on its face: absolute, or climbing with `..`.

    Judged from the text, not by resolving links: `agvas data prepare` links images into the root from
    wherever the publisher's files are, and those links are the dataset's own.
    """
    if not path:
        return False
    posix, windows = PurePosixPath(path), PureWindowsPath(path)
    return posix.is_absolute() or bool(windows.drive or windows.root) or ".." in posix.parts or ".." in windows.parts


def check_inside_root(root: str | os.PathLike, entries: dict[str, list[Entry]], split: str = "test") -> None:
    """Refuse entries whose image or mask path is absolute or climbs out of the root with `..`.

    A meta.json is data: it may come with a downloaded dataset, and must not make a tool read (and put
    in its report's gallery) files from elsewhere on the machine. The error names the first such entry.
    """
    path = Path(root) / META_FILE
    for cls, es in entries.items():
        for i, e in enumerate(es):
            for field_name in ("img_path", "mask_path"):
                value = getattr(e, field_name)
                if _outside(value):
                    raise DataError(f"{path}: {split}/{cls}[{i}]: {field_name} {value!r} lies outside the dataset "
                                    "root (absolute or with '..'); pass --allow-outside-root to read it anyway")


def load_sample(root: str | os.PathLike, entry: Entry, max_pixels: int | None = None) -> Sample:
    """Load an entry's pixels; a mask whose size differs from its image is an error naming both.

    An image or mask whose header claims more than `max_pixels` pixels is an ImageTooLargeError, raised
    before it is decoded (None: only Pillow's decompression-bomb limit).
    """
    root = Path(root)
    image = read_image_rgb(root / entry.img_path, max_pixels)
    if entry.mask_path:
        mask = read_mask(root / entry.mask_path, max_pixels=max_pixels)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{root / entry.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{entry.img_path} is {image.shape[1]}x{image.shape[0]}"
            )
    else:
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
    return Sample(image, mask, entry.cls_name, entry.specie_name, entry.anomalous, entry.img_path)
