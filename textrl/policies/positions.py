"""Position ids of left-padded sequences."""

from __future__ import annotations

import torch


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """The position of each token among its row's real tokens: ``(mask.cumsum(-1) - 1).clamp(min=0)``,
    so a row's first real token is at 0 whatever padding precedes it, and padding before it is at 0.

    Args:
        mask: ``(B, L)`` attention mask, long or bool, 1 for real tokens.

    Returns:
        ``(B, L)`` int64 position ids.
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)
