"""Reading images and masks of any mode, and writing files and folders so that no reader sees half of one.

The project's ground-floor IO: data, model, train, infer and evaluate all read and write through it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


DEFAULT_MAX_PIXELS = 4096 * 4096
"""16.8 megapixels: the largest image any command decodes unless told otherwise (--max-pixels). The float
maps of one result at that size already take ~200 MB; a 12000x12000 bilevel PNG of 17 kB took 98 s and
7.8 GB before this limit existed. The server, `segment`, `chat`, `eval` and `data prepare` share it."""

# What Pillow raises for a file it cannot parse (EOFError: pixel data cut short).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


class DataError(ValueError):
    """A file that cannot be used, with the file named in the message."""


class ImageTooLargeError(DataError):
    """An image over the pixel limit (or one Pillow calls a decompression bomb), refused before decoding."""


def too_large_message(path: str | os.PathLike, width: int, height: int, max_pixels: int) -> str:
    return (f"{path}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(raise it with --max-pixels)")


def open_image(path: str | os.PathLike, max_pixels: int | None = None, what: str = "image") -> Image.Image:
    """Open an image and check its size from the header alone, before a pixel is decoded.

    A header over `max_pixels` (None: only Pillow's own decompression-bomb limit) is an
    ImageTooLargeError; any other failure is a DataError naming the file. The caller closes the image.
    """
    path = Path(path)
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {'file' if what == 'image' else what} not found") from None
    except Image.DecompressionBombError as err:
        limit = f"at most {max_pixels:,} pixels are read (--max-pixels)" if max_pixels else "refused"
        raise ImageTooLargeError(f"{path}: {what} is too large to decode ({err}); {limit}") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read {what} ({err})") from None
    width, height = im.size
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise ImageTooLargeError(too_large_message(path, width, height, max_pixels))
    return im


def quiet_bomb_warnings() -> None:
    """Silence Pillow's DecompressionBombWarning for the rest of a command that checks --max-pixels itself.

    The warning would be printed once, as noise, for a file the command refuses with a clearer message.
    Only commands call this (it changes the process's warning filters), never library code.
    """
    import warnings

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def read_image_rgb(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Any image mode (L, RGB, RGBA, P, 16-bit I;16/I) as uint8 HxWx3 RGB; see `open_image` for the limit."""
    path = Path(path)
    im = open_image(path, max_pixels)
    try:
        with im:
            im.load()
            return to_rgb_array(im)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{path}: image is too large to decode ({err})") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Normalise a PIL image to uint8 RGB; 16-bit and float images are rescaled by their range."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = ((arr - lo) * scale).round().clip(0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode == "RGBA" or (im.mode == "P" and "transparency" in im.info) or im.mode == "LA":
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def read_mask(path: str | os.PathLike, threshold: int = 128, max_pixels: int | None = None) -> np.ndarray:
    """A mask file of any mode as uint8 {0,1}; grey levels (JPEG masks) are thresholded."""
    path = Path(path)
    im = open_image(path, max_pixels, what="mask")
    try:
        with im:
            im.load()
            arr = np.asarray(im.convert("L") if im.mode not in ("1", "L", "I;16", "I") else im)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{path}: mask is too large to decode ({err})") from None
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot read mask ({err})") from None
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.max(initial=0) <= 1:
        return (arr > 0).astype(np.uint8)
    return (arr >= threshold).astype(np.uint8)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a dataset file should read like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary folder beside `final` to fill; on leaving the block it takes `final`'s place.

    Its files are fsynced, an existing `final` is moved aside before the rename and deleted after it, so a
    kill at any moment leaves either the old folder or the new one whole, never half of one. On an error
    the temporary folder is removed and the old one kept. Temporary names start with `.<final name>.`,
    which is how a caller recognises the leftovers of a killed writer.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; one that cannot be read or parsed is a DataError naming the file.
    Callers check first that the file exists, so their message can say how to make it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not readable as JSON ({err})") from None


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save a uint8 array (HxW or HxWx3) as PNG, atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """A {0,1} or bool mask saved as a 0/255 PNG, the convention of every benchmark we read."""
    save_png(path, (np.asarray(mask) > 0).astype(np.uint8) * 255)
