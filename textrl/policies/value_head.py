"""The value head (critic): a linear map from the LM's last hidden state to V(s)."""

from __future__ import annotations

import torch
from torch import nn

from textrl.policies.logits import float32_head


class ValueHead(nn.Module):
    """``Linear(hidden_size, 1)`` in float32, initialised to zero so V(s) = 0 at the start.

    ``forward(hidden)``: ``(..., hidden_size)`` any float dtype → ``(...)`` float32 values, in the
    reward model's units, computed with autocast off (:func:`~textrl.policies.logits.float32_head`):
    under bf16 autocast V(s) is not rounded to bf16. InstructGPT may initialise it from the
    reward model instead.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., hidden_size)`` any float dtype → ``(...)`` float32 V(s)."""
        return float32_head(self.summary, hidden).squeeze(-1)
