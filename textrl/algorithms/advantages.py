"""Pure tensor functions for advantages: masked statistics, whitening, GAE, turn-level credit.

All take ``mask`` of the same shape as the data, 1.0 on the action tokens (the tokens the policy
sampled) and 0.0 on env tokens and padding, and ignore the masked-out entries.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1 (over ``dim``, or all entries).

    Returns 0 where no entry is masked in (instead of NaN).
    """
    mask = mask.to(x.dtype)
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked-in entries of ``x`` (Bessel-corrected unless ``unbiased=False``)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    return var * n / (n - 1) if unbiased and n > 1 else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise the masked-in entries of ``x`` to unit variance (and zero mean if ``shift_mean``).

    Padded entries come back as 0. Used on advantages over the whole rollout batch (PPO
    implementations in TRL/OpenRLHF do the same).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over each row's action tokens.

    δ_t = r_t + γ·V(s_{t'}) − V(s_t),  A_t = δ_t + γλ·A_{t'},  with t' the row's next action token
    and V = A = 0 after its last one (every episode ends: EOS or a budget, where the reward
    model's score is paid, so nothing is bootstrapped). Env tokens between two actions (a
    multi-turn episode's tool results and user turns) are observations, not decisions: they carry
    no value, advantage or discount step, so γ and λ apply once per action and the value of the
    first action after a gap bootstraps the last action before it (as verl and OpenRLHF treat
    masked observation tokens). With a prefix mask (single-turn) this is the ordinary GAE.

    Args:
        rewards: ``(B, T)`` per-token rewards (float), read on action tokens only.
        values: ``(B, T)`` V(s_t) from the rollout.
        mask: ``(B, T)`` 1.0 on action tokens (any pattern: gaps at env tokens, padding after).
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1].

    Returns:
        ``(advantages, returns)``, both ``(B, T)``; ``returns = advantages + values``; zero off the
        action tokens.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])  # A at the next action
    next_value = torch.zeros_like(last)  # V at the next action
    for t in reversed(range(T)):
        action = mask[:, t] > 0
        step = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * last
        last = torch.where(action, step, last)
        next_value = torch.where(action, values[:, t], next_value)
        advantages[:, t] = torch.where(action, step, 0.0)
    return advantages, (advantages + values) * mask


def rewards_before(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)``: the rewards paid before each action token, ``Σ_{t' < t} r_{t'}`` (0 off the
    action tokens). Turn-level credit: an action cannot have caused a reward paid before it, so its
    reward-to-go is the episode's return minus this (``G_t = G_0 − rewards_before_t``); 0 at every
    action of a single-turn episode, whose one reward comes last.

    Args:
        rewards: ``(B, T)`` per-token rewards (``RolloutBatch.rewards``: each on the action whose
            step paid it); mask: ``(B, T)`` 1.0 on action tokens.
    """
    return (rewards.cumsum(1) - rewards) * mask.to(rewards.dtype)


def state_values(estimates: torch.Tensor, starts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)``: for every action, the estimate at the chosen state its segment started from.

    The chosen states of an episode (``starts``: 1.0 at the action taken in each, the episode's
    first action among them) cut its actions into segments; every action of a segment gets the
    estimate of the state that opened it (``estimates`` at that start; a branching rollout's
    :attr:`~textrl.rollout.branching.BranchEstimates.mean`). 0 off the actions.

    Args:
        estimates: ``(B, T)`` read where ``starts`` is 1; starts: ``(B, T)`` 1.0 at segment starts;
            mask: ``(B, T)`` 1.0 on action tokens.
    """
    segment = (torch.cumsum(starts * mask, dim=1) * mask).long()  # 1, 2, ... per action; 0 elsewhere
    by_segment = torch.zeros(estimates.shape[0], estimates.shape[1] + 1, dtype=estimates.dtype, device=estimates.device)
    by_segment.scatter_add_(1, segment, estimates * starts * mask)
    return by_segment.gather(1, segment) * mask


def segment_advantages(
    rewards: torch.Tensor, estimates: torch.Tensor, starts: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """VinePPO's advantages (Kazemnejad et al. 2025, eq. 5 with γ = 1): every action of segment j
    (the actions from chosen state s_j up to the next, see :func:`state_values`) gets
    ``A_j = Σ_{t ∈ j} r_t + V̂(s_{j+1}) − V̂(s_j)``, with V̂ = 0 after an episode's last segment.

    Args:
        rewards: ``(B, T)`` per-token rewards (the KL-shaped ones); estimates: ``(B, T)`` V̂ at the
            segment starts; starts: ``(B, T)`` 1.0 at the action taken in each chosen state (every
            episode's first action among them); mask: ``(B, T)`` 1.0 on action tokens.

    Returns:
        ``(B, T)`` advantages, 0 off the actions.
    """
    segment = (torch.cumsum(starts * mask, dim=1) * mask).long()
    width = rewards.shape[1] + 2  # segments 1..T, and one past the last (V̂ = 0)
    sums = torch.zeros(rewards.shape[0], width, dtype=rewards.dtype, device=rewards.device)
    sums.scatter_add_(1, segment, rewards * mask)
    values = torch.zeros_like(sums).scatter_add_(1, segment, estimates * starts * mask)
    per_segment = sums[:, :-1] + values[:, 1:] - values[:, :-1]
    return per_segment.gather(1, segment) * mask
