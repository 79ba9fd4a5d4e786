"""The Token Refiner: one small MLP, shared by the three anchors, from the LLM width to the decoder width.

Sharing it keeps the three anchors in one space, which the relative [NOR]/[ANO] softmax relies on.
"""

from __future__ import annotations

from torch import Tensor, nn


class TokenRefiner(nn.Module):
    def __init__(self, llm_dim: int, decoder_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(llm_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, decoder_dim)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.fc2(self.fc1(hidden.to(self.fc1.weight.dtype)).relu())
