"""The reward-model protocol and the check every score goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from textrl.errors import NonFiniteError, TextRLError, first_line


@runtime_checkable
class RewardModel(Protocol):
    """Anything that scores responses to prompts.

    ``__call__(prompts, responses)`` takes two equal-length lists of strings (B of each) and
    returns a ``torch.Tensor`` of shape ``(B,)`` and dtype ``float32``, one finite scalar reward
    per (prompt, response) pair. Higher is better. Units are the reward model's own (a VADER
    compound score lies in [-1, 1]; a classifier logit is unbounded).
    """

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor: ...


@dataclass
class RewardOutput:
    """Scores plus what went into them, for reward models that can explain themselves.

    A reward model may define ``score_with_details(prompts, responses) -> RewardOutput`` besides
    ``__call__``; the env then logs its components as ``reward/<name>`` and writes its details
    to the samples file.

    Attributes:
        scores: ``FloatTensor[B]``, the reward (what ``__call__`` returns).
        components: ``{name: FloatTensor[B]}``, named parts of the reward (a composite's
            unweighted component scores); empty for a single model.
        details: one JSON-serialisable dict per response (for an RBRM, which rules fired), or
            ``None``.
    """

    scores: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    details: list[dict[str, Any]] | None = None


def score_responses(
    reward_model, prompts: Sequence[str], responses: Sequence[str], name: str = "reward model"
) -> RewardOutput:
    """Score B (prompt, response) pairs with any reward model, checked.

    Calls ``reward_model.score_with_details`` when it exists, else ``reward_model(prompts,
    responses)``. Scores and every component go through :func:`check_scores`.

    Returns:
        RewardOutput: ``scores`` float32 ``(B,)``; components float32 ``(B,)`` each; ``details``
        a list of B dicts or ``None``.

    Raises:
        TextRLError: the reward model raised, or returned a wrong shape/dtype or a NaN/inf
            (the message names the component), or details of the wrong length.
    """
    n = len(responses)
    try:
        if hasattr(reward_model, "score_with_details"):
            out = reward_model.score_with_details(list(prompts), list(responses))
        else:
            out = RewardOutput(reward_model(list(prompts), list(responses)))
    except TextRLError:
        raise
    except Exception as e:  # a user's reward model: one line, not its traceback
        raise TextRLError(
            f"{name} raised {type(e).__name__}: {first_line(e)}; expected a float tensor of shape ({n},)"
        ) from None
    if not isinstance(out, RewardOutput):
        raise TextRLError(f"{name}.score_with_details returned {type(out).__name__}; expected a RewardOutput")
    components = {k: check_scores(v, n, f"{name} component {k!r}") for k, v in out.components.items()}
    if out.details is not None and len(out.details) != n:
        raise TextRLError(f"{name} returned {len(out.details)} details; expected {n}, one per response")
    return RewardOutput(check_scores(out.scores, n, name), components, out.details)


def check_scores(scores, batch_size: int, name: str = "reward model") -> torch.Tensor:
    """Validate a reward model's output and return it as a float32 tensor of shape ``(B,)``.

    Accepts a tensor, a numpy array or a list of numbers of length ``batch_size``.

    Raises:
        TextRLError: wrong shape or a non-numeric dtype; :class:`~textrl.errors.NonFiniteError`
            for a NaN/inf entry. The message names the reward model, what it returned and what
            was expected.
    """
    try:
        t = torch.as_tensor(scores)
    except (TypeError, ValueError, RuntimeError):
        raise TextRLError(
            f"{name} returned {type(scores).__name__}; expected a float tensor of shape ({batch_size},)"
        ) from None
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TextRLError(f"{name} returned dtype {t.dtype}; expected a float tensor of shape ({batch_size},)")
    if tuple(t.shape) != (batch_size,):
        raise TextRLError(f"{name} returned shape {tuple(t.shape)}; expected ({batch_size},), one score per response")
    t = t.to(torch.float32)
    bad = ~torch.isfinite(t)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise NonFiniteError("reward", f"{name} returned {t[i].item()} for response {i}; expected finite scores")
    return t
