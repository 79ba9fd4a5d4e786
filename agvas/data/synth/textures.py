"""Defect-free surfaces: procedural texture and object families, and real DTD textures.

A family is a callable `(rng, size) -> Base`. Object families (round/square parts on a background)
also return the part mask and the bare background, so that a "missing piece" can reveal what lies
under a part instead of painting a flat fill.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from agvas.data.synth.fields import aniso_noise, coords, fbm, hsv, luminance
from agvas.io import read_image_rgb

Array = np.ndarray
DTD_PREFIX = "dtd_"
PHOTO_PREFIX = "photo_"
_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Base:
    """A defect-free surface. `image` float32 HxWx3 in [0, 1]."""

    image: Array
    family: str
    parts: Array | None = None  # bool HxW: where the objects are (object families only)
    background: Array | None = None  # float32 HxWx3: the scene without the objects
    part_radius: float = 0.0  # typical object half-size in px, scales defects on objects


# --------------------------------------------------------------------------------- textures


def _weave(rng: np.random.Generator, size: int) -> Base:
    """Woven fabric: warp and weft threads crossing over/under in a plain or twill order."""
    s = size / 256
    period = rng.uniform(5, 12) * s
    angle = rng.uniform(-0.25, 0.25) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    u, v = coords(size, angle)
    u = u / period + 1000.0
    v = v / period + 1000.0
    cu, cv = np.floor(u), np.floor(v)
    fu, fv = u - cu, v - cv
    n = int(rng.choice([2, 3, 4]))
    over = ((cu + cv) % 2 == 0) if n == 2 else (((cu - cv) % n) < max(1, n // 2))
    sharp = rng.uniform(0.3, 0.8)
    hu = np.sin(np.pi * fu) ** sharp * (0.8 + 0.2 * np.sin(np.pi * fv))
    hv = np.sin(np.pi * fv) ** sharp * (0.8 + 0.2 * np.sin(np.pi * fu))
    jit = rng.normal(0, 0.05, (2, 64)).astype(np.float32)  # thread-to-thread dye variation
    ju = jit[0][cu.astype(np.int64) % 64]
    jv = jit[1][cv.astype(np.int64) % 64]
    h = rng.random()
    sat, val = rng.uniform(0.1, 0.7), rng.uniform(0.35, 0.9)
    c_warp = hsv(h, sat, val)
    c_weft = hsv(h + rng.uniform(-0.5, 0.5) * (rng.random() < 0.4), sat * rng.uniform(0.6, 1.2),
                 val * rng.uniform(0.75, 1.1))
    height = np.where(over, hu + ju, hv + jv)[..., None]
    colour = np.where(over[..., None], c_warp, c_weft)
    fibre = 0.05 * fbm(rng, (size, size), 2.0 * s, octaves=2)[..., None]
    img = colour * (0.35 + 0.65 * height) + fibre
    return Base(np.clip(img, 0, 1).astype(np.float32), "weave")


def _orient(rng: np.random.Generator, img: Array) -> Array:
    """Random quarter-turn and flip: procedural textures are drawn axis-aligned for speed."""
    img = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def _wood(rng: np.random.Generator, size: int) -> Base:
    """Wood grain: distorted growth rings (sharp dark late-wood) plus fine fibre streaks along the grain."""
    s = size / 256
    period = rng.uniform(7, 22) * s
    shape = (size, size)
    x = np.arange(size, dtype=np.float32)[None, :]
    warp = aniso_noise(rng, shape, 2, 3) * rng.uniform(0.6, 2.5) + aniso_noise(rng, shape, 5, 12) * 0.25
    t = x / period + warp
    ring = (0.5 + 0.5 * np.sin(2 * np.pi * t)) ** rng.uniform(2, 6)
    light = hsv(rng.uniform(0.04, 0.11), rng.uniform(0.3, 0.65), rng.uniform(0.6, 0.92))
    dark = light * rng.uniform(0.4, 0.7)
    streak = aniso_noise(rng, shape, 6, size / 1.5) * 0.035 + aniso_noise(rng, shape, 20, size / 4) * 0.03
    img = light + (dark - light) * ring[..., None] + streak[..., None]
    return Base(_orient(rng, np.clip(img, 0, 1).astype(np.float32)), "wood")


def _metal(rng: np.random.Generator, size: int) -> Base:
    """Brushed metal: fine streaks along one direction, a broad sheen, a faint tint."""
    shape = (size, size)
    streak = aniso_noise(rng, shape, size / 24, size) * rng.uniform(0.02, 0.05)
    streak += aniso_noise(rng, shape, size / 64, size / 2) * 0.03
    gy = np.linspace(-1, 1, size, dtype=np.float32)[:, None]
    sheen = rng.uniform(-0.12, 0.12) * gy + 0.05 * fbm(rng, shape, size / 1.5, octaves=2)
    grey = rng.uniform(0.35, 0.8)
    tint = hsv(rng.random(), rng.uniform(0, 0.15), 1.0)
    img = (grey + streak + sheen)[..., None] * tint
    return Base(_orient(rng, np.clip(img, 0, 1).astype(np.float32)), "metal")


def _grid(rng: np.random.Generator, size: int) -> Base:
    """Meshes and grids: wire mesh, perforated plate, or tiles with grout lines."""
    s = size / 256
    period = rng.uniform(11, 30) * s
    angle = rng.uniform(-0.2, 0.2) + (np.pi / 4 if rng.random() < 0.2 else 0.0)
    u, v = coords(size, angle)
    u = u / period + 1000.0
    v = v / period + 1000.0
    du = np.abs(u - np.floor(u) - 0.5) * period  # distance to the cell's centre line, px
    dv = np.abs(v - np.floor(v) - 0.5) * period
    variant = rng.choice(["mesh", "perforated", "tiles"])
    bg = hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.05, 0.5))
    fg = hsv(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.55, 0.95))
    if rng.random() < 0.5:
        bg, fg = fg, bg
    grain = 0.03 * fbm(rng, (size, size), 3 * s, octaves=2)[..., None]
    if variant == "perforated":
        r = rng.uniform(0.22, 0.38) * period
        d = np.hypot(du, dv)
        hole = np.clip(r - d + 0.5, 0, 1)[..., None]
        inner = 0.55 + 0.45 * np.clip(d / r, 0, 1)[..., None]  # holes darker at their centre
        img = fg * (1 - hole) + bg * inner * hole
    else:
        half = rng.uniform(0.8, 2.5) * s
        eu = (period / 2 - du)  # distance from the cell border (where the lines are)
        ev = (period / 2 - dv)
        a = np.maximum(np.clip(half - eu + 0.5, 0, 1), np.clip(half - ev + 0.5, 0, 1))[..., None]
        if variant == "mesh":
            prof = np.minimum(np.clip(eu / (half + 1), 0, 1), np.clip(ev / (half + 1), 0, 1))
            wire = fg * (1.0 - 0.35 * prof[..., None])
            img = bg * (1 - a) + wire * a
        else:
            ci = np.floor(u).astype(np.int64) % 32
            cj = np.floor(v).astype(np.int64) % 32
            jit = rng.normal(0, 0.04, (32, 32)).astype(np.float32)
            img = (fg + jit[ci, cj][..., None]) * (1 - a) + bg * a
    return Base(np.clip(img + grain, 0, 1).astype(np.float32), "grid")


def _noise(rng: np.random.Generator, size: int) -> Base:
    """Noise fields: marble veins, two-colour clouds, or granite speckle."""
    s = size / 256
    shape = (size, size)
    variant = rng.choice(["marble", "clouds", "granite"])
    c1 = hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.45, 0.95))
    c2 = hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.1, 0.7))
    n = fbm(rng, shape, size / rng.uniform(1.5, 4), octaves=5)
    if variant == "marble":
        u, _ = coords(size, rng.uniform(0, np.pi))
        phase = u * rng.uniform(0.02, 0.06) / s + rng.uniform(2, 5) * n
        width = rng.uniform(0.1, 0.3)
        vein = np.clip(1 - np.abs(np.sin(phase)) / width, 0, 1) ** 2
        img = c1 + (c2 - c1) * vein[..., None]
    elif variant == "clouds":
        t = 1 / (1 + np.exp(-n * rng.uniform(1, 3)))
        img = c1 + (c2 - c1) * t[..., None]
    else:
        fine = fbm(rng, shape, 2.5 * s, octaves=2)
        img = c1 * (1 + 0.08 * n[..., None])
        img = np.where((fine > 1.2)[..., None], c2, img)
        img = np.where((fine < -1.5)[..., None], c1 * 0.5 + 0.5, img)
    img = img + 0.02 * fbm(rng, shape, 2 * s, octaves=2)[..., None]
    return Base(np.clip(img, 0, 1).astype(np.float32), "marble")


# --------------------------------------------------------------------------------- objects


def _background(rng: np.random.Generator, size: int) -> Array:
    """A plain work surface (felt, belt, tray): flat colour with low-frequency unevenness."""
    shape = (size, size)
    c = hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.05, 0.85))
    var = 0.04 * fbm(rng, shape, size / 2, octaves=2) + 0.02 * fbm(rng, shape, 2.0, octaves=1)
    return np.clip(c + var[..., None], 0, 1).astype(np.float32)


def _parts(rng: np.random.Generator, size: int, square: bool) -> Base:
    """A k x k arrangement of shaded discs/washers or (rounded) squares with drop shadows.

    Each pixel only ever belongs to its own grid cell, so all parts are evaluated at once with
    per-cell parameter tables instead of a loop over parts.
    """
    k = int(rng.choice([1, 1, 2, 2, 3]))
    cell = size / k
    idx = np.minimum((np.arange(size) / cell).astype(np.int64), k - 1)
    rows, cols = np.ix_(idx, idx)  # per-cell tables gathered to pixels by (row, col)

    def per_cell(table: Array) -> Array:
        return np.asarray(table, np.float32)[rows, cols]

    half = cell * rng.uniform(0.26, 0.38)
    centre = (idx + 0.5).astype(np.float32) * np.float32(cell)
    pix = np.arange(size, dtype=np.float32)
    ly = (pix - centre)[:, None] - per_cell(rng.uniform(-0.06, 0.06, (k, k)) * cell)
    lx = (pix - centre)[None, :] - per_cell(rng.uniform(-0.06, 0.06, (k, k)) * cell)
    radius = per_cell(half * rng.uniform(0.9, 1.1, (k, k)))
    if square:
        ang = per_cell(rng.uniform(-0.3, 0.3, (k, k))) if rng.random() < 0.6 else np.float32(0)
        c, s_ = np.cos(ang), np.sin(ang)
        qx = np.abs(lx * c + ly * s_)
        qy = np.abs(-lx * s_ + ly * c)
        rc = radius * np.float32(rng.uniform(0.02, 0.3))
        ex, ey = qx - (radius - rc), qy - (radius - rc)
        sdf = np.hypot(np.maximum(ex, 0), np.maximum(ey, 0)) + np.minimum(np.maximum(ex, ey), 0) - rc
        inner = np.maximum(qx, qy) < radius * rng.uniform(0.35, 0.6) if rng.random() < 0.5 else None
    else:
        dist = np.hypot(lx, ly)
        sdf = dist - radius
        if rng.random() < 0.45:  # washer: a concentric through-hole
            sdf = np.maximum(sdf, radius * rng.uniform(0.3, 0.5) - dist)
        inner = None
    alpha = np.clip(0.5 - sdf, 0, 1)
    bevel = max(1.5, float(half) * rng.uniform(0.08, 0.2))
    height = np.clip(-sdf / bevel, 0, 1)
    if not square:
        height = height * (0.85 + 0.15 * np.clip(-sdf / radius, 0, 1))  # slight dome
    gy, gx = np.gradient(height)
    la = rng.uniform(0, 2 * np.pi)
    shade = 1 + 0.8 * bevel * (gx * np.cos(la) + gy * np.sin(la))
    base_col = hsv(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.3, 0.95))
    col = base_col + np.asarray(rng.normal(0, 0.03, (k, k, 3)), np.float32)[rows, cols]
    surf = col * shade[..., None]
    if inner is not None:
        surf = np.where(inner[..., None], surf * rng.uniform(0.55, 0.85), surf)
    if not square and rng.random() < 0.5:  # turned finish: faint concentric rings
        surf = surf * (1 + 0.04 * np.sin(np.hypot(lx, ly) * rng.uniform(0.8, 2.0)))[..., None]
    surf = surf + 0.02 * fbm(rng, (size, size), 2.0, octaves=1)[..., None]
    bg = _background(rng, size)
    off = bevel * rng.uniform(0.5, 1.5)
    shadow = _shift(alpha, int(round(-off * np.sin(la))), int(round(-off * np.cos(la))))
    box = int(bevel * 1.7) | 1  # two box passes approximate a Gaussian at a fraction of its cost
    shadow = ndimage.uniform_filter(ndimage.uniform_filter(shadow, box), box)
    bg = bg * (1 - rng.uniform(0.2, 0.5) * shadow[..., None])
    a = alpha[..., None]
    img = bg * (1 - a) + np.clip(surf, 0, 1) * a
    return Base(img.astype(np.float32), "square_parts" if square else "round_parts",
                parts=alpha > 0.5, background=bg.astype(np.float32), part_radius=float(half))


def _shift(a: Array, dy: int, dx: int) -> Array:
    """Translate by whole pixels, filling with zeros (np.roll would wrap shadows round the edge)."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h + min(-dy, 0),
                                                                  max(-dx, 0):w + min(-dx, 0)]
    return out


def _round_parts(rng: np.random.Generator, size: int) -> Base:
    return _parts(rng, size, square=False)


def _square_parts(rng: np.random.Generator, size: int) -> Base:
    return _parts(rng, size, square=True)


PROCEDURAL: dict[str, Callable[[np.random.Generator, int], Base]] = {
    "weave": _weave,
    "wood": _wood,
    "metal": _metal,
    "grid": _grid,
    "marble": _noise,
    "round_parts": _round_parts,
    "square_parts": _square_parts,
}


# --------------------------------------------------------------------------------- real textures


@functools.lru_cache(maxsize=512)
def _load(path: str) -> Array:
    return read_image_rgb(path)


def _pick(rng: np.random.Generator, files: list[str]) -> Array:
    return _load(files[int(rng.integers(len(files)))])


def _crop_to_square(rng: np.random.Generator, img: Array, ch: int, cw: int, size: int) -> Array:
    """A random ch x cw window of `img`, resized to size x size, as float32 in [0, 1]."""
    y0, x0 = int(rng.integers(img.shape[0] - ch + 1)), int(rng.integers(img.shape[1] - cw + 1))
    crop = Image.fromarray(img[y0:y0 + ch, x0:x0 + cw]).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, np.float32) / 255.0


class TextureBank:
    """Real texture photographs: every sub-folder of `root` becomes a family `dtd_<folder>`.

    Images are decoded lazily and cached, because the same few hundred files are cropped over and
    over during on-the-fly training.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: texture folder not found")
        self.files: dict[str, list[str]] = {}
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir()):
            files = sorted(str(f) for f in sub.iterdir() if f.suffix.lower() in _IMAGE_EXT)
            if files:
                self.files[DTD_PREFIX + sub.name] = files
        if not self.files:
            raise FileNotFoundError(f"{self.root}: no class folders with images")

    @property
    def families(self) -> list[str]:
        return list(self.files)

    def sample(self, rng: np.random.Generator, family: str, size: int) -> Base:
        """A random crop (35-100 % of the short side), quarter-turn, flip and colour jitter."""
        img = _pick(rng, self.files[family])
        side = int(min(img.shape[:2]) * rng.uniform(0.35, 1.0))
        out = _orient(rng, _crop_to_square(rng, img, side, side, size))
        # colour jitter: brightness, contrast, saturation (hue is kept: it is part of the class)
        lum = luminance(out)[..., None]
        out = lum + (out - lum) * rng.uniform(0.7, 1.3)
        out = (out - out.mean()) * rng.uniform(0.8, 1.2) + out.mean() * rng.uniform(0.85, 1.15)
        return Base(np.clip(out, 0, 1).astype(np.float32), family)


class PhotoBank:
    """Whole photographs of good parts (capsules, cookies): defects are painted onto the part as it was
    photographed, so that an object's own edges, background, print and lighting are what the model learns
    to call normal, not only stationary textures (the simulated anomalies of AnomalyGPT and DRAEM).

    Unlike a texture, a photograph keeps its framing: a crop of 80-100 % of each side, squashed to a square
    as evaluation resizes, flips but no quarter turns (parts are photographed upright), mild lighting jitter.
    """

    def __init__(self, files: dict[str, list[str]]) -> None:
        self.files = {PHOTO_PREFIX + name: list(paths) for name, paths in files.items() if paths}
        if not self.files:
            raise ValueError("a photo bank needs at least one family with images")

    @property
    def families(self) -> list[str]:
        return list(self.files)

    def sample(self, rng: np.random.Generator, family: str, size: int) -> Base:
        img = _pick(rng, self.files[family])
        h, w = img.shape[:2]
        out = _crop_to_square(rng, img, int(h * rng.uniform(0.8, 1.0)), int(w * rng.uniform(0.8, 1.0)), size)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        if rng.random() < 0.5:
            out = out[::-1]
        out = (out - out.mean()) * rng.uniform(0.9, 1.1) + out.mean() * rng.uniform(0.9, 1.1)
        return Base(np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32), family)


@functools.lru_cache(maxsize=8)
def _bank_at(path: str) -> TextureBank:
    return TextureBank(path)


def as_bank(textures: TextureBank | PhotoBank | str | os.PathLike | None) -> TextureBank | PhotoBank | None:
    """Accept a bank or a folder path; banks are cached per folder so their image cache is shared."""
    if textures is None or isinstance(textures, (TextureBank, PhotoBank)):
        return textures
    return _bank_at(str(Path(textures).resolve()))


def family_names(textures: TextureBank | PhotoBank | None = None) -> list[str]:
    """Every family available: the procedural ones, then the real-texture classes."""
    return list(PROCEDURAL) + (textures.families if textures is not None else [])


def make_base(rng: np.random.Generator, family: str, size: int,
              textures: TextureBank | PhotoBank | str | os.PathLike | None = None) -> Base:
    """Draw one defect-free surface of `family`."""
    textures = as_bank(textures)
    if family in PROCEDURAL:
        return PROCEDURAL[family](rng, size)
    if family.startswith((DTD_PREFIX, PHOTO_PREFIX)):
        if textures is None:
            need = "a texture folder (--textures)" if family.startswith(DTD_PREFIX) else "photo roots (data.photos)"
            raise ValueError(f"family {family!r} needs {need}")
        if family not in textures.files:
            where = textures.root if isinstance(textures, TextureBank) else "the photo bank"
            raise ValueError(f"family {family!r} not in {where} (has {', '.join(textures.families)})")
        return textures.sample(rng, family, size)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(family_names(textures))}")
