"""Small files that claim to be huge images, for the tests of every reader's pixel guard.

Pillow decides from the header alone that a file is a decompression bomb, so a header is all a test
needs: writing the real 60000x60000 image would take gigabytes of memory.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A ~60-byte bilevel PNG whose header says width x height (its pixel data is cut short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(
        b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bomb_png(path: Path) -> Path:
    """The issue's reproduction: a PNG whose header claims 60000x60000 pixels."""
    return png_claiming(path, 60000, 60000)
