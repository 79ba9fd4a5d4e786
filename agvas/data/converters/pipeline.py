"""Validate every pair a converter found, place its files under DST, and write meta.json once.

DST is the dataset root that meta.json's relative paths start from. Nothing big is copied:

* an image is symlinked into DST at its path relative to SRC (a copy where the filesystem refuses
  symlinks, or with `link="copy"`), so DST mirrors the publisher's layout;
* a mask that is already a 0/255 greyscale PNG is linked the same way; any other mask (JPEG grey
  levels, 0/k label maps, .mat ground truth, .tif) is binarised and written as a 0/255 PNG under
  `DST/masks/<its path relative to SRC>.png`, so every mask a reader meets is clean;
* when DST is SRC, files already in place are left alone and only meta.json (and converted masks)
  are added.

Each pair is checked before it is placed: the image must open (header only unless
`verify_images`), the mask must decode fully and have the image's size, and an image the layout
calls anomalous must have a non-empty mask. An image or mask whose header claims more than
`max_pixels` (the limit every command shares, --max-pixels) is skipped before a pixel is decoded, and so
is a file Pillow calls a decompression bomb. A failing pair is skipped with a message naming the file;
the rest carries on. meta.json is written atomically at the end, and not at all when nothing is valid.

A run either completes or leaves DST as it was: every file it creates in DST is recorded, every file it
replaces is first moved aside, and when the run fails (a disk error, Ctrl-C, nothing valid) the new files
and folders are removed and the old files moved back (`_Journal`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from agvas.data.converters.base import (
    EMPTY_MASK,
    MISSING_MASK,
    NORMAL_SPECIE,
    SIZE_MISMATCH,
    UNREADABLE_IMAGE,
    UNREADABLE_MASK,
    Converter,
    LayoutError,
    NothingValidError,
    Pair,
    Skip,
)
from agvas.data.meta import Entry, write_meta
from agvas.io import DEFAULT_MAX_PIXELS, DataError, open_image

LinkMode = Literal["symlink", "copy"]
Result = Entry | Skip
MASKS_DIR = "masks"


@dataclass
class ConversionReport:
    """What a conversion produced: entries by split and class, what was skipped, where meta.json went."""

    dataset: str
    src: Path
    dst: Path
    entries: dict[str, dict[str, list[Entry]]] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    meta_path: Path | None = None
    seconds: float = 0.0

    @property
    def n_entries(self) -> int:
        return sum(len(es) for by_cls in self.entries.values() for es in by_cls.values())

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for skip in self.skipped:
            counts[skip.reason] = counts.get(skip.reason, 0) + 1
        return counts


def convert(
    converter: Converter,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    link: LinkMode = "symlink",
    verify_images: bool = False,
    workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_found: Callable[[int], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> ConversionReport:
    """Convert SRC (the publisher's layout) into DST/meta.json; see the module docstring for the rules.

    Raises LayoutError when SRC is not the named layout and NothingValidError when every pair was
    skipped; in both cases (and on any other failure) no meta.json is written and DST is left as it
    was. `on_found(n)` hears how many images the layout holds, `on_result` every entry or skip in order
    (a progress bar and the problem log use them).
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise LayoutError(f"{src}: SRC does not exist")
    if not src.is_dir():
        raise LayoutError(f"{src}: SRC is not a folder")
    if dst.exists() and not dst.is_dir():
        raise LayoutError(f"{dst}: DST exists and is not a folder")
    found = converter.scan(src)
    if on_found is not None:
        on_found(len(found))
    report = ConversionReport(converter.name, src, dst)
    journal = _Journal()
    placer = _Placer(converter, src, dst, link, verify_images, max_pixels, journal)
    pairs = [item for item in found if isinstance(item, Pair)]
    n_workers = workers or min(8, os.cpu_count() or 1)

    def emit(result: Result, split: str = "test") -> None:
        if isinstance(result, Skip):
            report.skipped.append(result)
        else:
            report.entries.setdefault(split, {}).setdefault(result.cls_name, []).append(result)
        if on_result is not None:
            on_result(result)

    for item in found:
        if isinstance(item, Skip):
            emit(item)
    try:
        pool = ThreadPoolExecutor(max_workers=n_workers)
        try:
            for pair, result in zip(pairs, pool.map(placer.place, pairs), strict=True):
                emit(result, pair.split)
        finally:
            pool.shutdown(cancel_futures=True)  # on an error (disk full, Ctrl-C) stop instead of finishing
        report.seconds = time.perf_counter() - start
        if report.n_entries == 0:
            reasons = ", ".join(f"{n} {r}" for r, n in report.skipped_by_reason().items()) or "no images found"
            raise NothingValidError(
                f"{src}: no valid {converter.title} image found ({reasons}); no meta.json was written"
            )
        if hasattr(os, "sync"):
            os.sync()  # one flush for all masks written without fsync, before meta.json points at them
        report.meta_path = write_meta(dst, report.entries.get("test", {}), report.entries.get("train", {}))
    except BaseException:
        journal.roll_back()
        raise
    journal.commit()
    report.seconds = time.perf_counter() - start
    return report


class _Journal:
    """What a run changed in DST, so that a failed run can undo it; safe to use from several threads.

    A file the run creates is listed and removed on failure; a file it replaces is first renamed to a
    hidden backup next to it, deleted on success and renamed back on failure. Folders the run creates
    are removed on failure once empty (DST itself included, when the run created it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._created: list[Path] = []
        self._backups: list[tuple[Path, Path]] = []
        self._new_folders: set[Path] = set()

    def make_parent(self, target: Path) -> None:
        """Create `target`'s folder, listing each folder that did not exist (DST's own included)."""
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._new_folders.update(missing)

    def replace(self, tmp: Path, target: Path) -> None:
        """Move `tmp` onto `target`, keeping what was there for a roll-back."""
        backup = None
        if os.path.lexists(target):
            backup = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.bak")
            os.replace(target, backup)
        try:
            os.replace(tmp, target)
        except BaseException:
            if backup is not None:
                os.replace(backup, target)
            raise
        with self._lock:
            if backup is None:
                self._created.append(target)
            else:
                self._backups.append((target, backup))

    def commit(self) -> None:
        for _, backup in self._backups:
            backup.unlink(missing_ok=True)
        self._backups.clear()
        self._created.clear()

    def roll_back(self) -> None:
        for path in reversed(self._created):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for target, backup in reversed(self._backups):
            os.replace(backup, target)
        for folder in sorted(self._new_folders, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: something else put a file there
                folder.rmdir()
        self._created.clear()
        self._backups.clear()


class _Placer:
    """Checks one pair and puts its files in DST; safe to call from several threads at once."""

    def __init__(self, converter: Converter, src: Path, dst: Path, link: LinkMode, verify: bool,
                 max_pixels: int | None, journal: _Journal) -> None:
        self.converter, self.src, self.dst, self.link, self.verify = converter, src, dst, link, verify
        self.max_pixels, self.journal = max_pixels, journal

    def place(self, pair: Pair) -> Result:
        image_rel = self._relative(pair.image)
        try:
            with open_image(pair.image, self.max_pixels) as im:
                size = im.size
                if self.verify:
                    im.load()
        except DataError as err:
            return Skip(str(pair.image), UNREADABLE_IMAGE, str(err))
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            return Skip(str(pair.image), UNREADABLE_IMAGE, f"{pair.image}: cannot read image ({err})")
        if image_rel is None:
            return Skip(str(pair.image), UNREADABLE_IMAGE, f"{pair.image}: lies outside SRC {self.src}")

        anomalous, mask_rel, specie = False, "", pair.specie_name
        if pair.anomaly is not False:
            if pair.mask is None:
                what = "anomalous image" if pair.anomaly else "image whose mask tells whether it is normal"
                return Skip(str(pair.image), MISSING_MASK, f"{pair.image}: {what}, but no mask was found")
            checked = self._check_mask(pair, size)
            if isinstance(checked, Skip):
                return checked
            anomalous, mask_rel = checked
            if not anomalous:
                specie = NORMAL_SPECIE
        self._put(pair.image, self.dst / image_rel)
        return Entry(image_rel.as_posix(), mask_rel, pair.cls_name, specie, int(anomalous))

    def _check_mask(self, pair: Pair, size: tuple[int, int]) -> Skip | tuple[bool, str]:
        assert pair.mask is not None
        mask_path = pair.mask
        try:
            if mask_path.suffix.lower() != ".mat":  # a .mat file has no image header to check
                open_image(mask_path, self.max_pixels, what="mask").close()
            data = self.converter.read_mask(mask_path)
        except FileNotFoundError:
            return Skip(str(mask_path), MISSING_MASK, f"{mask_path}: mask of {pair.image.name} not found")
        except DataError as err:
            return Skip(str(mask_path), UNREADABLE_MASK, str(err))
        h, w = data.mask.shape
        if (w, h) != size:
            return Skip(
                str(mask_path), SIZE_MISMATCH,
                f"{mask_path}: mask is {w}x{h} but its image {pair.image.name} is {size[0]}x{size[1]}",
            )
        if not data.mask.any():
            if pair.anomaly:
                return Skip(str(mask_path), EMPTY_MASK, f"{mask_path}: mask of {pair.image.name} is empty")
            return False, ""
        rel = self._relative(mask_path)
        if rel is None:
            return Skip(str(mask_path), UNREADABLE_MASK, f"{mask_path}: lies outside SRC {self.src}")
        if data.linkable:
            self._put(mask_path, self.dst / rel)
            return True, rel.as_posix()
        out_rel = Path(MASKS_DIR) / rel.with_suffix(".png")
        out = self.dst / out_rel
        if out.resolve() == mask_path.resolve():
            # DST is SRC and the source mask sits where ours would go: never overwrite a source file.
            raise LayoutError(f"{out}: converting in place would overwrite this source mask")
        _write_mask_png(out, data.mask, self.journal)
        return True, out_rel.as_posix()

    def _relative(self, path: Path) -> Path | None:
        try:
            rel = path.relative_to(self.src)
        except ValueError:
            return None
        return None if ".." in rel.parts else rel

    def _put(self, source: Path, target: Path) -> None:
        """Link (or copy) `source` to `target` by way of a temporary name, so `target` is never half."""
        if os.path.lexists(target) and target.resolve() == source.resolve():
            return  # in place already: DST is SRC, or an earlier run linked it
        self.journal.make_parent(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            linked = False
            if self.link == "symlink":
                try:
                    os.symlink(source.resolve(), tmp)
                    linked = True
                except OSError:
                    linked = False  # e.g. Windows without the privilege, or a FAT volume: copy instead
            if not linked:
                shutil.copyfile(source, tmp)
            self.journal.replace(tmp, target)
        except BaseException:
            if os.path.lexists(tmp):
                tmp.unlink()
            raise


def _write_mask_png(path: Path, mask: np.ndarray, journal: _Journal) -> None:
    """Write a 0/255 PNG by way of a temporary name, like io.save_mask_png but without an fsync per file.

    A per-file fsync made Kvasir's 998 masks take seconds; `convert` syncs once before meta.json
    is written instead, and the rename still means no reader ever sees half a mask.
    """
    buf = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buf, format="PNG")
    journal.make_parent(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        journal.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
