"""The Semantic–Pixel Alignment Module (SPAM, paper §3.1, Eqs. 1–2).

The LMM's semantic tokens f_s query the pixel encoder's features f_p (projected to the LLM width by
Linear_p) through multi-head cross-attention; the result f_align has one token per semantic token and is
placed right after the image tokens in the LLM input, so that the anchors can read pixel-level cues.
"""

from __future__ import annotations

from torch import Tensor, nn


class SemanticPixelAlignment(nn.Module):
    def __init__(self, llm_dim: int, pixel_dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if llm_dim % num_heads:
            raise ValueError(f"SPAM: {num_heads} heads do not divide the LLM width {llm_dim}")
        self.linear_p = nn.Linear(pixel_dim, llm_dim)
        self.cross_attn = nn.MultiheadAttention(llm_dim, num_heads, batch_first=True)

    def forward(self, semantic: Tensor, pixel: Tensor) -> Tensor:
        """semantic (B, N, D) from the LMM's projector; pixel (B, C, H, W) from the pixel encoder."""
        keys = self.linear_p(pixel.flatten(2).transpose(1, 2).to(self.linear_p.weight.dtype))
        aligned, _ = self.cross_attn(semantic.to(keys.dtype), keys, keys, need_weights=False)
        return aligned
