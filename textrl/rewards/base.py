"""The reward-model protocol and the check every score goes through."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

from textrl.errors import TextRLError


@runtime_checkable
class RewardModel(Protocol):
    """Anything that scores responses to prompts.

    ``__call__(prompts, responses)`` takes two equal-length lists of strings (B of each) and
    returns a ``torch.Tensor`` of shape ``(B,)`` and dtype ``float32``, one finite scalar reward
    per (prompt, response) pair. Higher is better. Units are the reward model's own (a VADER
    compound score lies in [-1, 1]; a classifier logit is unbounded).
    """

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor: ...


def check_scores(scores, batch_size: int, name: str = "reward model") -> torch.Tensor:
    """Validate a reward model's output and return it as a float32 tensor of shape ``(B,)``.

    Accepts a tensor, a numpy array or a list of numbers of length ``batch_size``.

    Raises:
        TextRLError: wrong shape, a non-numeric dtype, or any NaN/inf entry; the message
            names the reward model, what it returned and what was expected.
    """
    try:
        t = torch.as_tensor(scores)
    except (TypeError, ValueError, RuntimeError):
        raise TextRLError(f"{name} returned {type(scores).__name__}; expected a float tensor of shape ({batch_size},)") from None
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TextRLError(f"{name} returned dtype {t.dtype}; expected a float tensor of shape ({batch_size},)")
    if tuple(t.shape) != (batch_size,):
        raise TextRLError(f"{name} returned shape {tuple(t.shape)}; expected ({batch_size},), one score per response")
    t = t.to(torch.float32)
    bad = ~torch.isfinite(t)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise TextRLError(f"{name} returned {t[i].item()} for response {i}; expected finite scores")
    return t
