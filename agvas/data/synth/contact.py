"""A contact sheet of the generator: one row per family, a normal image then one image per defect
kind, each defect outlined by its mask's contour (drawn just outside the mask, so the defect itself
stays visible). It is the quickest way to check that defects are plausible and masks line up.

    python -m agvas.data.synth.contact docs/synth_families.png --textures ../shared/data/dtd
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from agvas.data.synth.defects import DEFECTS
from agvas.data.synth.sample import generate_sample
from agvas.data.synth.textures import TextureBank, family_names

_CONTOUR = np.array([255, 40, 40], np.uint8)


def _tile(image: np.ndarray, mask: np.ndarray, tile: int) -> np.ndarray:
    img = np.asarray(Image.fromarray(image).resize((tile, tile), Image.BILINEAR)).copy()
    m = np.asarray(Image.fromarray(mask * 255).resize((tile, tile), Image.BILINEAR)) >= 128
    if m.any():
        img[ndimage.binary_dilation(m, iterations=1) & ~m] = _CONTOUR
    return img


def render_contact_sheet(families: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                         textures: TextureBank | None = None, seed: int = 0, size: int = 256,
                         tile: int = 112) -> Image.Image:
    """Render the sheet as an image (labels on the left and on top)."""
    fams = list(families) if families else family_names(textures)
    cols = [None, *(kinds or DEFECTS)]
    label_w, label_h = 96, 16
    sheet = Image.new("RGB", (label_w + tile * len(cols), label_h + tile * len(fams)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, kind in enumerate(cols):
        draw.text((label_w + c * tile + 4, 2), kind or "normal", fill=(0, 0, 0))
    for r, fam in enumerate(fams):
        y = label_h + r * tile
        draw.text((4, y + tile // 2 - 6), fam, fill=(0, 0, 0))
        for c, kind in enumerate(cols):
            rng = np.random.default_rng([seed, r, c])
            s = generate_sample(rng, fam, kind, size, textures)
            sheet.paste(Image.fromarray(_tile(s.image, s.mask, tile)), (label_w + c * tile, y))
    return sheet


def save_contact_sheet(path: str | os.PathLike, sheet: Image.Image, colours: int = 256) -> Path:
    """Save as a palette PNG: photographic tiles in full RGB would be several MB for a docs image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="PNG file to write")
    ap.add_argument("--textures", help="folder of texture class folders (e.g. DTD)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tile", type=int, default=112)
    args = ap.parse_args(argv)
    bank = TextureBank(args.textures) if args.textures else None
    path = save_contact_sheet(args.out, render_contact_sheet(textures=bank, seed=args.seed, tile=args.tile))
    print(f"{path}: {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
