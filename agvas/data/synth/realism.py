"""Nuisance variation applied identically to normal and anomalous images.

An earlier experiment learnt the shortcut "anything that is not perfectly clean is an anomaly" when
only defective images carried imperfections. Here every image, normal or not, gets smooth
illumination gradients, vignetting, a colour cast, gamma/contrast changes, slight blur and sensor
noise; the defect image and its defect-free twin share the *same* draw, so these changes never enter
the mask and only local structured deviations do.

Specular highlights (`glare`) are drawn only when asked for. The shipped model flagged the highlight on
nearly every good tyre (a soft bright patch on dark rubber, with the tread still visible through it) as a defect,
because nothing bright and blob-like had ever been a normal image's. A highlight here is one or two soft,
often elongated patches that brighten the surface both multiplicatively (the texture shows through)
and additively (the light's own reflection); like every nuisance, it never enters the mask.

Exposure changes (`exposure`) are also drawn only when asked for. Every training surface is mid-grey on
average (mean 0.38-0.47 on the real sets), while the tyres are nearly black (mean 0.08, spread 0.05) and
CrackForest's pavement is flat (spread 0.05): a model that never saw a dark or washed-out normal image
has no reason to keep its masks empty on one. A draw either darkens the whole image (x0.12-0.6) or
flattens it towards a grey level (contrast x0.2-0.6); sensor noise comes after, so it grows relative to
the signal as it does in a real under-exposed photograph. Measured (README, "Real images"): on the tyres it
moved the false-alarm spot from the highlight to the shadowed side wall rather than removing it, so neither
option is on in a shipped recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from agvas.data.synth.fields import fbm

Array = np.ndarray


@dataclass
class Nuisance:
    """One draw of the nuisances for an image of a given size."""

    gain: Array  # HxWx3 multiplicative field: illumination x vignetting x colour cast
    gamma: float
    contrast: float
    blur: float  # Gaussian sigma in px, 0 for none
    noise: Array | None  # HxWx3 unit-variance noise, scaled by `noise_sigma`
    noise_sigma: float
    summary: dict[str, Any]
    glare: Array | None = None  # HxW highlight field, peak <= 1 (None: no highlight)
    glare_gain: float = 0.0  # multiplicative part: out * (1 + glare_gain * glare)
    glare_add: float = 0.0  # additive part: + glare_add * glare
    exposure_scale: float = 1.0  # out = pivot + (out - pivot) * scale (1: unchanged)
    exposure_pivot: float = 0.0  # 0: a darker exposure; a grey level: a flatter one


def _highlights(rng: np.random.Generator, size: int) -> Array:
    """One or two soft elliptical highlights (peak 1 each), anywhere but the outer rim."""
    t = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    y, x = t[:, None], t[None, :]
    out = np.zeros((size, size), np.float32)
    for _ in range(1 if rng.random() < 0.7 else 2):
        cy, cx = rng.uniform(-0.35, 0.35, 2)
        su = rng.uniform(0.04, 0.15)
        sv = su * float(np.exp(rng.uniform(0.0, np.log(5.0))))  # elongated along a curved surface
        ang = rng.uniform(0, np.pi)
        c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
        u, v = (x - np.float32(cx)) * c + (y - np.float32(cy)) * s, (y - np.float32(cy)) * c - (x - np.float32(cx)) * s
        out = np.maximum(out, np.exp(-0.5 * ((u / np.float32(su)) ** 2 + (v / np.float32(sv)) ** 2)))
    return out


def sample_nuisance(rng: np.random.Generator, size: int, strength: float = 1.0, glare: float = 0.0,
                    exposure: float = 0.0) -> Nuisance:
    """Draw nuisances; `strength` 0 gives the identity, 1 the default spread.

    `glare` is the chance of specular highlights, `exposure` that of a dark or flat exposure. At 0 (the
    defaults) nothing more is drawn from `rng`, so data generated before they existed (the held-out
    synthetic set) reproduces exactly.
    """
    k = float(strength)
    t = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    y, x = t[:, None], t[None, :]
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.float32(rng.uniform(0, 0.3) * k) * (x * np.float32(np.cos(ang)) + y * np.float32(np.sin(ang)))
    patchy = np.float32(rng.uniform(0, 0.08) * k) * fbm(rng, (size, size), size / 1.5, octaves=2)
    vign = rng.uniform(0, 0.4) * k if rng.random() < 0.6 else 0.0
    vy, vx = rng.uniform(-0.15, 0.15, 2)
    r2 = ((x - np.float32(vx)) ** 2 + (y - np.float32(vy)) ** 2) * 2
    light = (1 + ramp + patchy) * (1 - np.float32(vign) * r2) * np.float32(1 + rng.uniform(-0.12, 0.12) * k)
    cast = (1 + rng.normal(0, 0.035 * k, 3)).astype(np.float32)
    gain = light[..., None] * cast
    blur = float(rng.uniform(0.3, 1.1) * k) if rng.random() < 0.5 else 0.0
    sigma = float(rng.uniform(0.002, 0.025) * k)
    noise = None
    if sigma > 0:  # half the time luminance-only noise, as after demosaicing
        noise = rng.standard_normal((size, size, 1 if rng.random() < 0.5 else 3), dtype=np.float32)
    gamma = float(np.exp(rng.normal(0, 0.12 * k)))
    contrast = float(np.exp(rng.normal(0, 0.1 * k)))
    summary = {"blur": round(blur, 2), "noise": round(sigma, 4), "vignetting": round(float(vign), 3),
               "gamma": round(gamma, 3), "contrast": round(contrast, 3)}
    nz = Nuisance(gain, gamma, contrast, blur, noise, sigma, summary)
    if glare > 0 and rng.random() < glare:
        nz.glare = _highlights(rng, size)
        nz.glare_gain = float(rng.uniform(0.5, 3.0) * k)
        nz.glare_add = float(rng.uniform(0.0, 0.35) * k)
        summary.update(glare_gain=round(nz.glare_gain, 2), glare_add=round(nz.glare_add, 3))
    if exposure > 0 and rng.random() < exposure:
        if rng.random() < 0.6:
            nz.exposure_scale = float(np.exp(-rng.uniform(np.log(1 / 0.6), np.log(1 / 0.12)) * k))
        else:
            nz.exposure_scale = float(rng.uniform(0.2, 0.6) ** k)
            nz.exposure_pivot = float(rng.uniform(0.3, 0.7))
        summary.update(exposure_scale=round(nz.exposure_scale, 3), exposure_pivot=round(nz.exposure_pivot, 3))
    return nz


def unexposed(nz: Nuisance) -> Nuisance:
    """The same draw without its exposure change."""
    summary = {k: v for k, v in nz.summary.items() if not k.startswith("exposure_")}
    return replace(nz, exposure_scale=1.0, exposure_pivot=0.0, summary=summary)


def apply_nuisance(img: Array, nz: Nuisance | None, window: tuple[slice, slice] | None = None) -> Array:
    """Apply a nuisance draw to a float image in [0, 1]; deterministic, so twins stay aligned.

    With `window`, `img` is that crop of the full image and the matching crop of the fields is used
    (the blur sees the crop's own border, so callers keep a margin of `blur_reach`).
    """
    if nz is None:
        return img
    gain, noise, glare = nz.gain, nz.noise, nz.glare
    if window is not None:
        gain = gain[window]
        noise = noise[window] if noise is not None else None
        glare = glare[window] if glare is not None else None
    out = img
    if nz.blur > 0:
        out = ndimage.gaussian_filter(out, (nz.blur, nz.blur, 0), truncate=3.0)
    out = (out - np.float32(0.5)) * np.float32(nz.contrast) + np.float32(0.5)
    out = np.clip(out, 0, 1, out=out) ** np.float32(nz.gamma)
    out *= gain
    if nz.exposure_scale != 1.0:
        out = (out - np.float32(nz.exposure_pivot)) * np.float32(nz.exposure_scale) + np.float32(nz.exposure_pivot)
    if glare is not None:
        g = glare[..., None]
        out *= np.float32(1.0) + np.float32(nz.glare_gain) * g
        out += np.float32(nz.glare_add) * g
    if noise is not None:
        out += noise * (np.float32(nz.noise_sigma) * (np.float32(0.5) + np.sqrt(np.clip(out, 0, 1))))
    return np.clip(out, 0, 1, out=out)


def blur_reach(nz: Nuisance | None) -> int:
    """How far (px) the blur can carry a change beyond the painted region."""
    return 0 if nz is None or nz.blur == 0 else int(np.ceil(3 * nz.blur))


def to_uint8(img: Array) -> Array:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
