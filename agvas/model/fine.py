"""The fine branch (not in the paper; off unless `AGVASConfig.fine_branch`): pixel detail for the mask head.

AGMD classifies the 4x-upscaled pixel embedding, and that embedding knows only which 16-pixel patch a
structure is in. Thin defects (cracks, scratches) are narrower than a patch: a map that is perfect at the
patch grid and smooth inside each patch reaches only about 31 pixel AP on CrackForest's masks at 256 px,
where the same map at the upscaled grid (stride 4) reaches 81. A few strided convolutions over SAM's own
input pixels give the head that stride-4 detail, the way HQ-SAM adds early high-resolution features to
SAM's decoder. Its last layer starts at zero, so adding it to a trained checkpoint changes nothing until
it is trained.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FineBranch(nn.Module):
    def __init__(self, out_channels: int, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width // 2, width, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(width, width, kernel_size=3, padding=1)
        self.proj = nn.Conv2d(width, out_channels, kernel_size=1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, sam_pixels: Tensor) -> Tensor:
        """sam_pixels (B, 3, S, S), SAM's normalised and padded input -> (B, out_channels, S/4, S/4), the grid
        of AGMD's upscaled embedding (16-pixel patches, upscaled 4x)."""
        x = F.gelu(self.conv1(sam_pixels.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x))
        return self.proj(F.gelu(self.conv3(x)))
