"""Reading images and masks of any mode, and writing files so that no reader sees half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class DataError(ValueError):
    """A file that cannot be used, with the file named in the message."""


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Any image mode (L, RGB, RGBA, P, 16-bit I;16/I) as uint8 HxWx3 RGB."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb_array(im)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as err:
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


def read_mask(path: str | os.PathLike, threshold: int = 128) -> np.ndarray:
    """A mask file of any mode as uint8 {0,1}; grey levels (JPEG masks) are thresholded."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L") if im.mode not in ("1", "L", "I;16", "I") else im)
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except (OSError, SyntaxError, ValueError) as err:
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
