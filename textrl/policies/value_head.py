"""The value head (critic): a linear map from the LM's last hidden state to V(s)."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """``Linear(hidden_size, 1)`` in float32, initialised to zero so V(s) = 0 at the start.

    ``forward(hidden)``: ``(..., hidden_size)`` any float dtype → ``(...)`` float32 values, in the
    reward model's units. InstructGPT may initialise it from the reward model instead.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.float()).squeeze(-1)
