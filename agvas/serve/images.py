"""Upload validation: an upload is untrusted bytes, so it is judged by its content, never by its name.

Three guards, in the order that costs least: the byte size (413), the first bytes against the magic
numbers of the formats we decode (415; file names and declared content types are ignored), and the
pixel count read from the header before any pixel is decoded (413), so a 50 kB PNG that claims
50000x50000 pixels is refused without allocating 7.5 GB. Pillow is told the sniffed format, so it
never tries its other plugins (some of which shell out, e.g. EPS) on hostile bytes. Whatever is left
(corrupt or truncated data) is a 422. Every failure is an `UploadError` carrying the HTTP status.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image

from agvas.io import DEFAULT_MAX_PIXELS, to_rgb_array  # the limit every command shares
from agvas.serve.errors import ApiError

__all__ = ["ACCEPTED_FORMATS", "DEFAULT_MAX_PIXELS", "UploadError", "check_upload_size", "decode_upload",
           "sniff_format"]

# (Pillow format, test on the first 16 bytes)
_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("PNG", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    ("JPEG", lambda b: b.startswith(b"\xff\xd8\xff")),
    ("GIF", lambda b: b[:6] in (b"GIF87a", b"GIF89a")),
    ("WEBP", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("TIFF", lambda b: b[:4] in (b"II*\x00", b"MM\x00*")),
    ("BMP", lambda b: b[:2] == b"BM"),
)
ACCEPTED_FORMATS: tuple[str, ...] = tuple(name for name, _ in _SIGNATURES)


class UploadError(ApiError):
    """An upload the server refuses, with the HTTP status that says why."""


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name the bytes start like, or None."""
    head = data[:16]
    for name, test in _SIGNATURES:
        if test(head):
            return name
    return None


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB"


def check_upload_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise UploadError(413, f"the image file is {_mb(size)}; this server accepts at most {_mb(max_bytes)} "
                               "per upload (--max-upload-mb)")


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None,
                  name: str | None = None) -> np.ndarray:
    """Validated upload bytes -> uint8 HxWx3 RGB (the same normalisation as images read from disk)."""
    label = f"'{name}'" if name else "the upload"
    if max_bytes is not None:
        check_upload_size(len(data), max_bytes)
    if not data:
        raise UploadError(422, f"{label} is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(415, f"{label} is not an image this server reads: its content does not start like "
                               f"{', '.join(ACCEPTED_FORMATS)} (the file name and content type are not trusted)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise UploadError(413, f"{label} is too large to decode ({err}); this server accepts at most "
                                   f"{max_pixels:,} pixels (--max-pixels)") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise UploadError(422, f"{label} starts like a {fmt} file but its header cannot be read ({err})") from None
        with im:
            width, height = im.size
            if width * height > max_pixels:
                raise UploadError(413, f"{label} is {width}x{height} = {width * height:,} pixels; this server "
                                       f"accepts at most {max_pixels:,} pixels (--max-pixels)")
            if width == 0 or height == 0:
                raise UploadError(422, f"{label} has no pixels ({width}x{height})")
            try:
                im.load()
                return np.array(to_rgb_array(im))  # writable: torch.from_numpy warns on read-only arrays
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise UploadError(413, f"{label} is too large to decode ({err})") from None
            except (OSError, SyntaxError, ValueError, EOFError) as err:
                raise UploadError(422, f"{label} is a {fmt} file whose image data is corrupt or truncated "
                                       f"({err})") from None
