"""What a camera does to a real training image: framing, orientation and lighting, never a defect.

Real defect sets are small (tens to hundreds of images per category), so a model sees each image many
times. Without variation it learns the images; with only defective images varied it learns "anything
unusual is a defect". Here every real pair, good or defective, gets the same kinds of change: a
random crop (the framing of another camera), flips and quarter turns (parts lie any way round), and
the synthetic generator's own nuisance draw (illumination gradients, vignetting, colour cast,
gamma/contrast, slight blur, sensor noise). The mask follows every geometric change and no photometric
one, so lighting never enters the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from agvas.data.synth.realism import apply_nuisance, sample_nuisance, to_uint8


@dataclass(frozen=True)
class RealAugment:
    """A callable `(image, mask, rng) -> (image, mask)` at the training size (square, `size` px)."""

    size: int
    crop_prob: float = 0.5
    min_scale: float = 0.6
    """Smallest crop side as a fraction of the image's side."""
    flip_prob: float = 0.5
    rotate_prob: float = 0.25
    nuisance: float = 0.7
    """Strength of the lighting/optics draw (0: none, 1: the synthetic generator's default)."""
    glare: float = 0.0
    """Chance of added specular highlights (`realism.sample_nuisance`)."""
    exposure: float = 0.0
    """Chance of a dark or flat exposure (`realism.sample_nuisance`)."""

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = mask.shape
        if rng.random() < self.crop_prob:
            ch, cw = (max(1, int(round(n * rng.uniform(self.min_scale, 1.0)))) for n in (h, w))
            y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            image, mask = image[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]
        image = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((self.size, self.size), Image.NEAREST))
        if rng.random() < self.flip_prob:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < self.flip_prob:
            image, mask = image[::-1], mask[::-1]
        if rng.random() < self.rotate_prob:
            k = int(rng.integers(1, 4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
        if self.nuisance > 0:
            nz = sample_nuisance(rng, self.size, self.nuisance, self.glare, self.exposure)
            image = to_uint8(apply_nuisance(image.astype(np.float32) / 255.0, nz))
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)
