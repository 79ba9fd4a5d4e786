"""Self-reference (not in the paper; off unless `AGVASConfig.self_reference`): how unusual each patch is
within its own image, as a cue added to the pixel embedding.

A zero-shot defect is, before anything else, rare where it sits: a scratch on a fabric has no look-alike
elsewhere on the fabric, while every normal patch of a texture or a part has many. Training-free zero-shot
methods (mutual scoring of patches, median deviation) live on that fact alone. The tiny preset's encoders
learn from scratch on 40 000 generated images, and their maps do not rank good images below
defective ones (README, "Real images"): they fire on whatever looks defect-like, rare or not. This module
hands AGMD and SPAM the comparison explicitly. Per patch it measures, on a learned projection of the pixel
embedding, the mean cosine similarity to the patch's most similar patches elsewhere in the image (its
3x3 neighbourhood excluded, so a defect two patches wide cannot vouch for itself), and how far the patch
lies from the image's median patch. These cues go through a linear layer that starts at zero, so adding
the module to a trained checkpoint changes nothing until it learns.

On the tiny preset it did not make the maps rank images (four runs, docs/real-images.md): rarity among
features learned from scratch is no more telling than they are. It is meant for pretrained encoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def neighbourhood(height: int, width: int, radius: int, device: torch.device | None = None) -> Tensor:
    """(N, N) True where two cells of an h x w grid are within `radius` of each other (Chebyshev)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None]).abs() <= radius) & ((xs[:, None] - xs[None]).abs() <= radius)


def rarity(keys: Tensor, height: int, width: int, k: int, radius: int = 1) -> Tensor:
    """keys (B, N, D), unit length -> (B, N): 1 − the mean cosine similarity of each cell to its `k` most
    similar cells outside its neighbourhood. High where a patch has no look-alike in the image."""
    sim = keys @ keys.transpose(1, 2)
    sim = sim.masked_fill(neighbourhood(height, width, radius, keys.device), float("-inf"))
    k = max(1, min(k, sim.shape[-1] - (2 * radius + 1) ** 2))
    return 1.0 - sim.topk(k, dim=-1).values.mean(-1)


class SelfReference(nn.Module):
    def __init__(self, dim: int, key_dim: int = 64, k_fraction: float = 0.03, radius: int = 1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, key_dim)
        self.proj = nn.Linear(key_dim + 2, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.k_fraction = k_fraction
        self.radius = radius

    def cues(self, pixel: Tensor) -> Tensor:
        """pixel (B, C, H, W) -> (B, H·W, key_dim + 2): [rarity, rarity − the image's median rarity,
        key − the image's median key]. The first is absolute (a good image has no rare patch at all), the
        others relative to the image."""
        h, w = pixel.shape[-2:]
        x = pixel.flatten(2).transpose(1, 2).to(self.key.weight.dtype)
        keys = F.normalize(self.key(self.norm(x)), dim=-1)
        rare = rarity(keys, h, w, round(self.k_fraction * h * w), self.radius)
        relative = rare - rare.median(dim=1, keepdim=True).values
        deviation = keys - keys.median(dim=1, keepdim=True).values
        return torch.cat([rare.unsqueeze(-1), relative.unsqueeze(-1), deviation], dim=-1)

    def forward(self, pixel: Tensor) -> Tensor:
        """The pixel embedding (B, C, H, W) with the cues added, same shape and dtype."""
        b, c, h, w = pixel.shape
        added = self.proj(self.cues(pixel)).transpose(1, 2).reshape(b, c, h, w)
        return pixel + added.to(pixel.dtype)
