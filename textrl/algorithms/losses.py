"""PPO's loss terms as pure functions of tensors (Schulman et al. 2017).

Every function takes ``mask`` (``(B, T)``, 1.0 on real response tokens) and averages over the
masked-in tokens of the minibatch (token-level averaging, as in TRL and OpenRLHF).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from textrl.algorithms.advantages import masked_mean, masked_var


APPROXKL_LOG_RATIO_CAP = 20.0  # nats; |log ρ| beyond this counts as 20 in policy/approxkl


class PolicyLoss(NamedTuple):
    """Clipped-surrogate terms: ``loss`` (to minimise), ``clipfrac`` and ``approxkl`` (scalars)."""

    loss: torch.Tensor
    clipfrac: torch.Tensor
    approxkl: torch.Tensor


class ValueLoss(NamedTuple):
    """Clipped value-loss terms: ``loss`` and ``clipfrac`` (scalars)."""

    loss: torch.Tensor
    clipfrac: torch.Tensor


def ppo_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> PolicyLoss:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), negated to be minimised.

    ``ρ = exp(logπ − logπ_old)``;  ``loss = mean(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)))``.
    ``clipfrac`` is the fraction of tokens where the clipped term was the larger;
    ``approxkl = ½·mean((logπ − logπ_old)²)``.

    Both log-probs are of the sampling distribution (after top-k/top-p). Padding positions get
    log ρ = 0 before any arithmetic, so a ``finfo.min`` log-prob there cannot overflow. A real token
    that top-k/top-p has cut off since the rollout has ρ = 0 (no gradient: the clipped objective is
    flat there) and, in ``approxkl`` only, its log ρ clamped to ``±APPROXKL_LOG_RATIO_CAP`` (20 nats),
    so the metric stays finite (it would be +∞).

    Args:
        logprobs: ``(B, T)`` log π(a_t|s_t) under the current parameters (with grad).
        old_logprobs: ``(B, T)`` the rollout's log π_old(a_t|s_t).
        advantages: ``(B, T)`` advantage estimates (usually whitened).
        mask: ``(B, T)`` 1.0 on real tokens.
        clip_range: ε > 0.
    """
    real = mask.bool()
    log_ratio = torch.where(real, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    capped = log_ratio.detach().clamp(-APPROXKL_LOG_RATIO_CAP, APPROXKL_LOG_RATIO_CAP)
    approxkl = 0.5 * masked_mean(capped**2, mask)
    return PolicyLoss(loss, clipfrac.detach(), approxkl)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float | None,
) -> ValueLoss:
    """Clipped value loss (as in OpenAI baselines' PPO2 and TRL).

    ``V_clip = V_old + clip(V − V_old, −ε_v, ε_v)``;
    ``loss = ½·mean(max((V − R)², (V_clip − R)²))``; with ``clip_range_value=None`` it is
    ``½·mean((V − R)²)``.

    Args:
        values: ``(B, T)`` current V(s_t) (with grad).
        old_values: ``(B, T)`` the rollout's V(s_t).
        returns: ``(B, T)`` GAE returns (targets).
        mask: ``(B, T)`` 1.0 on real tokens.
        clip_range_value: ε_v > 0, or ``None`` for no clipping.
    """
    unclipped = (values - returns) ** 2
    if clip_range_value is None:
        return ValueLoss(0.5 * masked_mean(unclipped, mask), torch.zeros((), device=values.device))
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return ValueLoss(loss, masked_mean((clipped > unclipped).float(), mask).detach())


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 − Var(R − V) / Var(R)`` over masked-in tokens (1 is a perfect critic, ≤ 0 useless)."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)
