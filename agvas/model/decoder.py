"""The Anchor-Guided Mask Decoder (AGMD, paper §3.1, Eqs. 4–8).

Learnable query tokens, one per anchor, are concatenated with the refined anchor embeddings
(Z0 = [t_nor, t_ano, t_seg, h_nor, h_ano, h_seg]) and run through SAM's two-way transformer against the
pixel embedding. The updated learnable tokens become per-pixel classifiers over the 4x-upscaled
embedding: [SEG] by a sigmoid (absolute), [NOR]/[ANO] by a softmax against each other (relative).
Variants without some anchors simply have fewer tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agvas.anchors import ANO, NOR, SEG
from agvas.model.transformer import TwoWayTransformer


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (SAM's upscaling norm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class HypernetMLP(nn.Module):
    """SAM's three-layer per-token MLP that turns a token into a pixel classifier."""

    def __init__(self, dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers - 2))
        self.proj_out = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.proj_in(x))
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.proj_out(x)


class PositionalEncoding(nn.Module):
    """SAM's random-Fourier positional code of the pixel grid (weights named as in `SamPositionalEmbedding`)."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        # A fixed random projection, never trained (as in SAM): a buffer, saved with the weights.
        self.register_buffer("positional_embedding", scale * torch.randn(2, dim // 2))

    def forward(self, height: int, width: int) -> Tensor:
        w = self.positional_embedding
        ys = (torch.arange(height, device=w.device, dtype=w.dtype) + 0.5) / height
        xs = (torch.arange(width, device=w.device, dtype=w.dtype) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        coords = 2 * math.pi * ((2 * grid - 1) @ w)
        return torch.cat([coords.sin(), coords.cos()], dim=-1).permute(2, 0, 1).unsqueeze(0)


@dataclass
class DecoderOutput:
    """Low-resolution logits of each anchor's head, (B, h, w) at 4x the embedding grid."""

    seg_logits: Tensor | None
    nor_logits: Tensor | None
    ano_logits: Tensor | None


class AnchorGuidedMaskDecoder(nn.Module):
    def __init__(self, anchors: tuple[str, ...], dim: int = 256, depth: int = 2, num_heads: int = 8,
                 mlp_dim: int = 2048) -> None:
        super().__init__()
        if (NOR in anchors) != (ANO in anchors):
            raise ValueError("[NOR] and [ANO] are relative anchors and come as a pair")
        if not anchors:
            raise ValueError("the decoder needs at least one anchor")
        self.anchors = tuple(a for a in (NOR, ANO, SEG) if a in anchors)
        self.query_tokens = nn.Embedding(len(self.anchors), dim)
        self.no_mask_embed = nn.Parameter(torch.zeros(dim))
        self.pe = PositionalEncoding(dim)
        self.transformer = TwoWayTransformer(dim, depth, num_heads, mlp_dim)
        self.upscale_conv1 = nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2)
        self.upscale_layer_norm = LayerNorm2d(dim // 4, eps=1e-6)
        self.upscale_conv2 = nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2)
        self.output_hypernetworks_mlps = nn.ModuleList(HypernetMLP(dim, dim // 8) for _ in self.anchors)

    def forward(self, anchor_embeds: Tensor, pixel_embeds: Tensor, fine: Tensor | None = None) -> DecoderOutput:
        """anchor_embeds (B, A, C): refined anchors in `self.anchors` order; pixel_embeds (B, C, H, W);
        fine (B, C/8, 4H, 4W), the fine branch's detail, added to the upscaled embedding the heads classify."""
        b, _, h, w = pixel_embeds.shape
        queries = self.query_tokens.weight.unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([queries, anchor_embeds.to(queries.dtype)], dim=1)
        image = pixel_embeds + self.no_mask_embed.view(1, -1, 1, 1)
        image_pe = self.pe(h, w).to(image.dtype).expand(b, -1, -1, -1)
        tokens, image = self.transformer(tokens, image, image_pe)

        image = image.transpose(1, 2).reshape(b, -1, h, w)
        up = F.gelu(self.upscale_layer_norm(self.upscale_conv1(image)))
        up = F.gelu(self.upscale_conv2(up))
        if fine is not None:
            if fine.shape[-2:] != up.shape[-2:]:  # only where SAM's input side is not 16 x the embedding grid
                fine = F.interpolate(fine, up.shape[-2:], mode="bilinear", align_corners=False)
            up = up + fine.to(up.dtype)
        kernels = torch.stack(
            [mlp(tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        logits = torch.einsum("bac,bchw->bahw", kernels, up)
        by_anchor = {a: logits[:, i] for i, a in enumerate(self.anchors)}
        return DecoderOutput(by_anchor.get(SEG), by_anchor.get(NOR), by_anchor.get(ANO))

    @torch.no_grad()
    def load_sam_mask_decoder(self, mask_decoder: nn.Module, positional_embedding: Tensor | None = None,
                              no_mask_embed: Tensor | None = None) -> None:
        """Initialise from a SAM checkpoint's mask decoder (transformers' `SamMaskDecoder`).

        The two-way transformer, the upscaling and the first hypernetwork MLPs carry over unchanged;
        SAM's mask tokens seed the learnable query tokens. The LISA recipe starts from the same weights.
        """
        self.transformer.load_state_dict(mask_decoder.transformer.state_dict())
        for name in ("upscale_conv1", "upscale_conv2", "upscale_layer_norm"):
            getattr(self, name).load_state_dict(getattr(mask_decoder, name).state_dict())
        for mine, theirs in zip(self.output_hypernetworks_mlps, mask_decoder.output_hypernetworks_mlps, strict=False):
            mine.load_state_dict(theirs.state_dict())
        sam_tokens = mask_decoder.mask_tokens.weight
        self.query_tokens.weight.copy_(sam_tokens[: len(self.anchors)])
        if positional_embedding is not None:
            self.pe.positional_embedding.copy_(positional_embedding)
        if no_mask_embed is not None:
            self.no_mask_embed.copy_(no_mask_embed.reshape(-1))
