"""Defect kinds: each paints one structured local deviation onto a defect-free surface.

A defect function returns the modified image and the *region* it may have touched. The exact mask
is not decided here: `sample.py` compares the final images (after the nuisances) and keeps only the
pixels that changed visibly, so that the mask never claims an invisible change and never misses a
visible one. `strength` > 1 is passed on retries when a draw turned out too faint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from agvas.data.synth.fields import bezier, blob, coords, fbm, hsv, luminance, polygon, strokes
from agvas.data.synth.textures import PROCEDURAL, Base

Array = np.ndarray


@dataclass
class DefectDraw:
    """A painted defect: float32 image, bool region of every touched pixel, kind-specific details."""

    image: Array
    region: Array
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------- helpers


def _centre(rng: np.random.Generator, base: Base, margin: float) -> tuple[float, float]:
    """A defect location: on an object for object families, anywhere (away from the border) otherwise."""
    size = base.image.shape[0]
    if base.parts is not None and base.parts.any():
        ys, xs = np.nonzero(base.parts)
        i = int(rng.integers(len(ys)))
        return float(ys[i]), float(xs[i])
    lo, hi = margin, size - 1 - margin
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _polarity(rng: np.random.Generator, img: Array, alpha: Array) -> str:
    """Dark marks on bright surfaces and bright ones on dark surfaces, random in between."""
    w = alpha > 0.05
    lum = float(luminance(img[w]).mean()) if w.any() else 0.5
    if lum > 0.6:
        return "dark"
    if lum < 0.3:
        return "bright"
    return "dark" if rng.random() < 0.5 else "bright"


def _towards(img: Array, polarity: str, amount: float) -> Array:
    """The surface pushed towards black or white by `amount`, keeping its texture."""
    amount = min(amount, 0.95)
    return img * (1 - amount) if polarity == "dark" else img + (1 - img) * amount


def _blend(img: Array, alpha: Array, target: Array) -> Array:
    a = alpha[..., None]
    return (img + a * (target - img)).astype(np.float32)


def _scale(base: Base) -> float:
    """Defects are specified at 256 px and scale with the image."""
    return base.image.shape[0] / 256


# --------------------------------------------------------------------------------- kinds


def scratch(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """One to three thin, gently curved lines, brighter (polished) or darker than the surface."""
    size = base.image.shape[0]
    s = _scale(base)
    cy, cx = _centre(rng, base, 20 * s)
    length = rng.uniform(0.15, 0.55) * size
    if base.parts is not None:
        length = min(length, 1.6 * base.part_radius)
    ang = rng.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)], np.float32)
    nrm = np.array([-d[1], d[0]], np.float32)
    mid = np.array([cx, cy], np.float32)
    bend = rng.uniform(-0.15, 0.15) * length
    count = int(rng.choice([1, 1, 1, 2, 3]))
    width = rng.uniform(1.0, 2.6) * s
    lines = []
    for i in range(count):
        off = nrm * (i * rng.uniform(3, 7) * s) + d * rng.uniform(-0.1, 0.1) * length
        ln = length * (1 if i == 0 else rng.uniform(0.4, 0.9))
        p0, p2 = mid + off - d * ln / 2, mid + off + d * ln / 2
        lines.append((bezier(p0, mid + off + nrm * bend, p2), width * (1 if i == 0 else 0.8)))
    alpha = strokes(size, lines)
    pol = _polarity(rng, base.image, alpha)
    target = _towards(base.image, pol, rng.uniform(0.45, 0.8) * strength)
    return DefectDraw(_blend(base.image, alpha, target), alpha > 0.01, {"count": count, "polarity": pol})


def _crack_paths(rng: np.random.Generator, start: Array, ang: float, steps: int, step: float,
                 width: float, depth: int, out: list[tuple[Array, float]]) -> None:
    """A jagged random walk that spawns thinner branches: the look of brittle fracture."""
    pts = [start]
    p = start.copy()
    for i in range(steps):
        ang += rng.normal(0, 0.35)
        p = p + step * np.array([np.cos(ang), np.sin(ang)], np.float32)
        pts.append(p.copy())
        if depth < 2 and i > 2 and rng.random() < 0.06:
            side = 1 if rng.random() < 0.5 else -1
            _crack_paths(rng, p.copy(), ang + side * rng.uniform(0.4, 1.1), int((steps - i) * rng.uniform(0.3, 0.6)),
                         step, max(width * 0.65, 0.7), depth + 1, out)
    out.append((np.array(pts), width))


def crack(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """A thin, branching, dark fracture line (bright on very dark surfaces, as if dust-filled)."""
    size = base.image.shape[0]
    s = _scale(base)
    cy, cx = _centre(rng, base, 30 * s)
    length = rng.uniform(0.2, 0.6) * size
    if base.parts is not None:
        length = min(length, 1.8 * base.part_radius)
    step = 2.5 * s
    ang = rng.uniform(0, 2 * np.pi)
    start = np.array([cx, cy], np.float32) - 0.5 * length * np.array([np.cos(ang), np.sin(ang)], np.float32)
    lines: list[tuple[Array, float]] = []
    _crack_paths(rng, start, ang, max(4, int(length / step)), step, rng.uniform(1.2, 2.8) * s, 0, lines)
    alpha = strokes(size, lines)
    if base.parts is not None:
        alpha = alpha * base.parts  # a crack runs through material, not across the background
    lum = float(luminance(base.image[alpha > 0.05]).mean()) if (alpha > 0.05).any() else 0.5
    pol = "bright" if lum < 0.18 else "dark"
    target = _towards(base.image, pol, rng.uniform(0.6, 0.9) * strength)
    return DefectDraw(_blend(base.image, alpha, target), alpha > 0.01,
                      {"branches": len(lines) - 1, "polarity": pol})


def hole(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """A roundish opening: dark (or the background, through a part) inside a slightly raised rim."""
    size = base.image.shape[0]
    s = _scale(base)
    r = rng.uniform(4, 20) * s
    if base.parts is not None:
        r = min(r, 0.45 * base.part_radius)
    cy, cx = _centre(rng, base, r + 6 * s)
    irr, elong, ang = rng.uniform(0.1, 0.35), rng.uniform(1.0, 1.6), rng.uniform(0, np.pi)
    rim_w = rng.uniform(1.0, 2.5) * s
    state = rng.bit_generator.state
    inner = blob(rng, size, (cy, cx), r, irr, elong, ang)
    rng.bit_generator.state = state  # the same outline, grown by the rim width
    outer = blob(rng, size, (cy, cx), r + rim_w, irr, elong, ang)
    u, _ = coords(size, rng.uniform(0, 2 * np.pi), (cy, cx))
    depth = np.clip(0.5 + 0.5 * u / max(r, 1.0), 0, 1)[..., None]  # lit on one side of the wall
    if base.background is not None:
        through = base.background * (0.45 + 0.35 * depth)
        if base.parts is not None:
            inner = inner * ndimage.binary_erosion(base.parts, iterations=max(1, int(rim_w)))
            outer = outer * base.parts
    else:
        through = np.broadcast_to(np.float32(0.03) + 0.12 * depth * base.image.mean((0, 1)), base.image.shape)
    img = _blend(base.image, np.clip(outer - inner, 0, 1), _towards(base.image, "bright", 0.3 * strength))
    img = _blend(img, inner, np.asarray(through, np.float32))
    return DefectDraw(img, outer > 0.01, {"radius_px": round(float(r), 1)})


_TINTS = {
    "rust": (0.55, 0.25, 0.08),
    "oil": (0.14, 0.11, 0.06),
    "yellow": (0.85, 0.72, 0.2),
    "blue": (0.15, 0.3, 0.75),
    "green": (0.2, 0.55, 0.2),
    "red": (0.75, 0.12, 0.1),
    "white": (0.92, 0.92, 0.88),
}


def stain(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """A soft, patchy colour change: darker, lighter or tinted (rust, oil, dye), texture kept underneath."""
    size = base.image.shape[0]
    s = _scale(base)
    r = rng.uniform(6, 32) * s
    if base.parts is not None:
        r = min(r, 0.6 * base.part_radius)
    cy, cx = _centre(rng, base, r)
    alpha = blob(rng, size, (cy, cx), r, rng.uniform(0.25, 0.5), rng.uniform(1, 2.5), rng.uniform(0, np.pi))
    alpha = ndimage.gaussian_filter(alpha, rng.uniform(0.8, 2.5) * s)
    alpha = alpha * (0.75 + 0.25 * np.tanh(fbm(rng, (size, size), max(r / 2, 2.0), octaves=2)))
    if base.parts is not None:
        alpha = alpha * base.parts
    w = alpha > 0.1
    local = base.image[w].mean(0) if w.any() else base.image.mean((0, 1))
    amount = rng.uniform(0.5, 0.85) * strength
    mode = rng.choice(["darker", "brighter", "tint", "tint"])
    if mode == "tint":
        names = [n for n, c in _TINTS.items() if np.abs(np.asarray(c) - local).mean() > 0.15] or ["oil"]
        name = str(rng.choice(names))
        tint = np.asarray(_TINTS[name], np.float32)
        lum = luminance(base.image)[..., None] / max(float(luminance(local)), 0.05)
        target = tint * (0.6 + 0.4 * np.clip(lum, 0, 2))
    else:
        name = str(mode)
        pol = "dark" if mode == "darker" else "bright"
        if (pol == "dark" and luminance(local) < 0.15) or (pol == "bright" and luminance(local) > 0.85):
            pol = "bright" if pol == "dark" else "dark"
            name = "brighter" if pol == "bright" else "darker"
        target = _towards(base.image, pol, 0.8)
    return DefectDraw(_blend(base.image, np.clip(alpha * amount, 0, 1), target), alpha > 0.01, {"tint": name})


def missing(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """A piece gone: on objects a chunk bitten out of a part (showing background), on textures a
    patch where the pattern is absent (a flat fill)."""
    size = base.image.shape[0]
    s = _scale(base)
    if base.parts is not None and base.background is not None:
        edge = base.parts & ~ndimage.binary_erosion(base.parts, iterations=2)
        ys, xs = np.nonzero(edge if edge.any() else base.parts)
        i = int(rng.integers(len(ys)))
        r = base.part_radius * rng.uniform(0.3, 0.6)
        chunk = blob(rng, size, (float(ys[i]), float(xs[i])), r, rng.uniform(0.1, 0.4))
        alpha = chunk * base.parts
        img = _blend(base.image, alpha, base.background)
        return DefectDraw(img, alpha > 0.01, {"where": "part edge"})
    r = rng.uniform(8, 30) * s
    cy, cx = _centre(rng, base, r)
    if rng.random() < 0.5:
        alpha = blob(rng, size, (cy, cx), r, rng.uniform(0.1, 0.4), rng.uniform(1, 2), rng.uniform(0, np.pi))
        shape = "blob"
    else:
        k = int(rng.integers(4, 8))  # roughly even corners: random ones make slivers
        ang = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * (2 * np.pi / k) + rng.uniform(0, 2 * np.pi)
        rad = r * rng.uniform(0.6, 1.3, ang.size)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        alpha = polygon(size, pts)
        shape = "polygon"
    w = alpha > 0.5
    local = base.image[w].mean(0) if w.any() else base.image.mean((0, 1))
    # a flat fill of exactly the mean colour would hide where the pattern is faint: shift it
    fill = _towards(local, "dark" if luminance(local) > 0.45 else "bright", rng.uniform(0.25, 0.5) * strength)
    img = _blend(base.image, alpha, np.broadcast_to(fill.astype(np.float32), base.image.shape))
    return DefectDraw(img, alpha > 0.01, {"where": shape})


def _foreign(rng: np.random.Generator, base: Base, local: Array) -> Array:
    """A patch of another material whose colour clearly differs from the surface around it."""
    size = base.image.shape[0]
    other = [f for f in PROCEDURAL if f not in (base.family, "round_parts", "square_parts")]
    tex = PROCEDURAL[str(rng.choice(other))](rng, size).image
    col = hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.9))
    for _ in range(8):
        if np.abs(col - local).mean() > 0.25:
            break
        col = hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.05, 0.95))
    return (0.6 * col + 0.4 * tex * col / max(float(tex.mean()), 0.05)).astype(np.float32)


def contamination(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """Foreign matter lying on the surface: a cluster of particles, a fibre/hair, or one larger blob."""
    size = base.image.shape[0]
    s = _scale(base)
    cy, cx = _centre(rng, base, 24 * s)
    mode = str(rng.choice(["particles", "fibre", "blob"]))
    if mode == "particles":
        alpha = np.zeros((size, size), np.float32)
        spread = rng.uniform(4, 25) * s
        for _ in range(int(rng.integers(2, 9))):
            py = float(np.clip(cy + rng.normal(0, spread), 2, size - 3))
            px = float(np.clip(cx + rng.normal(0, spread), 2, size - 3))
            alpha = np.maximum(alpha, blob(rng, size, (py, px), rng.uniform(1.5, 5) * s, rng.uniform(0.2, 0.5)))
    elif mode == "fibre":
        length = rng.uniform(20, 80) * s
        ang = rng.uniform(0, np.pi)
        d = np.array([np.cos(ang), np.sin(ang)], np.float32)
        n = np.array([-d[1], d[0]], np.float32)
        mid = np.array([cx, cy], np.float32)
        p1 = mid + n * rng.uniform(-0.5, 0.5) * length
        alpha = strokes(size, [(bezier(mid - d * length / 2, p1, mid + d * length / 2), rng.uniform(1, 2) * s)])
    else:
        alpha = blob(rng, size, (cy, cx), rng.uniform(5, 16) * s, rng.uniform(0.3, 0.6), rng.uniform(1, 2),
                     rng.uniform(0, np.pi))
    w = alpha > 0.3
    local = base.image[w].mean(0) if w.any() else base.image.mean((0, 1))
    matter = _foreign(rng, base, local)
    alpha = np.clip(alpha * min(1.0, 0.85 * strength + 0.15), 0, 1)
    return DefectDraw(_blend(base.image, alpha, matter), alpha > 0.01, {"form": mode})


def fold(rng: np.random.Generator, base: Base, strength: float = 1.0) -> DefectDraw:
    """A local deformation: a crease (line fold) or a dent/bulge, warping the pattern and shading it."""
    size = base.image.shape[0]
    s = _scale(base)
    cy, cx = _centre(rng, base, 24 * s)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y -= cy
    x -= cx
    lit = rng.uniform(0, 2 * np.pi)
    if rng.random() < 0.6:
        form = "crease"
        ang = rng.uniform(0, np.pi)
        c, sn = np.cos(ang), np.sin(ang)
        along = x * c + y * sn
        across = -x * sn + y * c
        w = rng.uniform(4, 12) * s
        half = rng.uniform(0.15, 0.4) * size
        if base.parts is not None:
            half = min(half, 0.9 * base.part_radius)
        env = 1 / (1 + np.exp((np.abs(along) - half) / (4 * s)))
        t = across / w
        g = np.exp(-t**2) * env
        amp = rng.uniform(0.5, 1.2) * w * strength
        disp = amp * t * g  # material pinched towards the crease line
        dy, dx = disp * c, -disp * sn
        slope = -2 * t * g  # d(height)/d(across) in units of 1/w
        light = np.float32(np.cos(lit - ang - np.pi / 2))
        shade = 1 + rng.uniform(0.35, 0.6) * strength * (slope * light + 0.3 * g * np.sign(light + 1e-6))
    else:
        form = "dent"
        rad = rng.uniform(8, 22) * s
        if base.parts is not None:
            rad = min(rad, 0.6 * base.part_radius)
        r = np.hypot(x, y) / rad
        g = np.exp(-(r**2))
        amp = rng.uniform(0.4, 0.9) * rad * strength * (1 if rng.random() < 0.5 else -1)
        dy, dx = amp * g * y / rad, amp * g * x / rad  # radial push, zero at the centre
        slope = -2 * r * g  # radial derivative of the bump
        cos_l = (x * np.cos(lit) + y * np.sin(lit)) / np.maximum(np.hypot(x, y), 1e-3)
        shade = 1 + rng.uniform(0.35, 0.6) * strength * slope * cos_l * np.sign(amp)
    region = g > 0.02
    if base.parts is not None:
        region &= base.parts
    img = base.image.copy()
    ys, xs = np.nonzero(region)
    if ys.size:
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        sy = np.arange(y0, y1, dtype=np.float32)[:, None] - dy[y0:y1, x0:x1]
        sx = np.arange(x0, x1, dtype=np.float32)[None, :] - dx[y0:y1, x0:x1]
        warped = np.stack([ndimage.map_coordinates(base.image[..., ch], [sy, sx], order=1, mode="nearest")
                           for ch in range(3)], -1)
        sh = (shade[y0:y1, x0:x1] - 1)[..., None]  # shading towards black or white, visible on any tone
        warped = np.where(sh < 0, warped * (1 + sh), warped + (1 - warped) * sh)
        keep = region[y0:y1, x0:x1, None]
        img[y0:y1, x0:x1] = np.where(keep, np.clip(warped, 0, 1), img[y0:y1, x0:x1])
    return DefectDraw(img, region, {"form": form})


DEFECTS: dict[str, Callable[[np.random.Generator, Base, float], DefectDraw]] = {
    "scratch": scratch,
    "crack": crack,
    "hole": hole,
    "stain": stain,
    "missing": missing,
    "contamination": contamination,
    "fold": fold,
}
