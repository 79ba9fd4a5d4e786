"""Procedural primitives shared by the texture families and the defect kinds.

Everything works on float32 arrays in [0, 1] and is built from cheap operations (bicubic upsampling of
small random grids, analytic coordinates, PIL rasterisation) because the training loop calls the
generator on the fly and needs tens of images per second on one core.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

Array = np.ndarray


def resize_f(arr: Array, shape: tuple[int, int], resample: int = Image.BICUBIC) -> Array:
    """Resize a 2-D float array with PIL's 'F' mode: much faster than scipy zoom for upsampling."""
    h, w = shape
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), "F").resize(
        (w, h), resample), dtype=np.float32)


def _normalise(x: Array) -> Array:
    x = x - x.mean()
    sd = float(x.std())
    return x / sd if sd > 1e-8 else x


def aniso_noise(rng: np.random.Generator, shape: tuple[int, int], cells_y: float, cells_x: float) -> Array:
    """Smooth noise with independent correlation lengths along y and x (grain, brushing, streaks).

    `cells_*` is the number of random values along that axis; fewer cells means longer correlation.
    Returns zero mean, unit standard deviation.
    """
    gy = max(2, int(round(cells_y)) + 1)
    gx = max(2, int(round(cells_x)) + 1)
    grid = rng.standard_normal((gy, gx)).astype(np.float32)
    return _normalise(resize_f(grid, shape))


def fbm(rng: np.random.Generator, shape: tuple[int, int], scale: float, octaves: int = 4,
        persistence: float = 0.5) -> Array:
    """Fractal (Perlin-like) noise: a sum of octaves of smooth noise; `scale` is the largest feature in px."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp = 1.0
    for o in range(octaves):
        cells = max(h, w) / max(scale / (2**o), 1.0)
        out += amp * aniso_noise(rng, shape, cells * h / max(h, w), cells * w / max(h, w))
        amp *= persistence
    return _normalise(out)


def coords(size: int, angle: float = 0.0, centre: tuple[float, float] | None = None) -> tuple[Array, Array]:
    """Pixel coordinates rotated by `angle` (radians) around `centre`: u across, v along."""
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y -= cy
    x -= cx
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * c + y * s, -x * s + y * c


def hsv(h: float, s: float, v: float) -> Array:
    """An RGB colour (float32, 3) from hue/saturation/value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32)


def luminance(img: Array) -> Array:
    """Rec. 601 luma of an HxWx3 (or ...x3) array."""
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def blob(rng: np.random.Generator, size: int, centre: tuple[float, float], radius: float,
         irregularity: float = 0.3, elongation: float = 1.0, angle: float = 0.0) -> Array:
    """Soft-edged (1 px anti-aliased) irregular blob as float alpha in [0, 1].

    The outline is a circle whose radius is modulated by a few random harmonics, so that holes,
    stains and chunks look organic yet stay a single connected region.
    """
    cy, cx = centre
    reach = radius * max(elongation, 1.0) * (1 + 2 * irregularity) + 3
    y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 2)
    out = np.zeros((size, size), np.float32)
    if y1 <= y0 or x1 <= x0:
        return out
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    y -= cy
    x -= cx
    c, s = np.cos(angle), np.sin(angle)
    u = (x * c + y * s) / elongation
    v = -x * s + y * c
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    rad = np.ones_like(r)
    for k in range(2, 7):
        rad += (irregularity / k**0.8) * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rad = np.maximum(rad, 0.35) * radius
    out[y0:y1, x0:x1] = np.clip(rad - r + 0.5, 0, 1)
    return out


def strokes(size: int, lines: Sequence[tuple[Array, float]], supersample: int = 3) -> Array:
    """Rasterise polylines (points Nx2 as (x, y), width in px) into an anti-aliased alpha in [0, 1]."""
    big = size * supersample
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, width in lines:
        p = [(float(x) * supersample, float(y) * supersample) for x, y in np.asarray(pts)]
        if len(p) < 2:
            continue
        w = max(1, int(round(width * supersample)))
        draw.line(p, fill=255, width=w, joint="curve")
        r = w / 2
        for x, y in (p[0], p[-1]):  # round caps: PIL draws butt ends
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


def polygon(size: int, pts: Array, supersample: int = 3) -> Array:
    """Rasterise a polygon ((x, y) points) into an anti-aliased alpha in [0, 1]."""
    big = size * supersample
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).polygon([(float(x) * supersample, float(y) * supersample) for x, y in pts],
                                   fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float32) / 255.0


def bezier(p0: Array, p1: Array, p2: Array, n: int = 32) -> Array:
    """Quadratic Bezier curve through control points p0-p1-p2: gently curved scratches and fibres."""
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
