"""Nuisance variation applied identically to normal and anomalous images.

An earlier experiment learnt the shortcut "anything that is not perfectly clean is an anomaly" when
only defective images carried imperfections. Here every image, normal or not, gets smooth
illumination gradients, vignetting, a colour cast, gamma/contrast changes, slight blur and sensor
noise; the defect image and its defect-free twin share the *same* draw, so these changes never enter
the mask and only local structured deviations do.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def sample_nuisance(rng: np.random.Generator, size: int, strength: float = 1.0) -> Nuisance:
    """Draw nuisances; `strength` 0 gives the identity, 1 the default spread."""
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
    return Nuisance(gain, gamma, contrast, blur, noise, sigma, summary)


def apply_nuisance(img: Array, nz: Nuisance | None, window: tuple[slice, slice] | None = None) -> Array:
    """Apply a nuisance draw to a float image in [0, 1]; deterministic, so twins stay aligned.

    With `window`, `img` is that crop of the full image and the matching crop of the fields is used
    (the blur sees the crop's own border, so callers keep a margin of `blur_reach`).
    """
    if nz is None:
        return img
    gain, noise = nz.gain, nz.noise
    if window is not None:
        gain = gain[window]
        noise = noise[window] if noise is not None else None
    out = img
    if nz.blur > 0:
        out = ndimage.gaussian_filter(out, (nz.blur, nz.blur, 0), truncate=3.0)
    out = (out - np.float32(0.5)) * np.float32(nz.contrast) + np.float32(0.5)
    out = np.clip(out, 0, 1, out=out) ** np.float32(nz.gamma)
    out *= gain
    if noise is not None:
        out += noise * (np.float32(nz.noise_sigma) * (np.float32(0.5) + np.sqrt(np.clip(out, 0, 1))))
    return np.clip(out, 0, 1, out=out)


def blur_reach(nz: Nuisance | None) -> int:
    """How far (px) the blur can carry a change beyond the painted region."""
    return 0 if nz is None or nz.blur == 0 else int(np.ceil(3 * nz.blur))


def to_uint8(img: Array) -> Array:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
