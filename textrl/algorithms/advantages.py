"""Pure tensor functions for advantages: masked statistics, whitening, GAE.

All take ``mask`` of the same shape as the data, 1.0 for real response tokens and 0.0 for
padding, and ignore the padded entries.
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
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over padded episodes.

    δ_t = r_t + γ·V(s_{t+1}) − V(s_t),  A_t = δ_t + γλ·A_{t+1},  with V = 0 and A = 0 after the
    last real token of each episode (every episode ends: EOS or the length limit, where the
    reward model's score is paid, so nothing is bootstrapped).

    Args:
        rewards: ``(B, T)`` per-token rewards (float).
        values: ``(B, T)`` V(s_t) from the rollout.
        mask: ``(B, T)`` 1.0 on real tokens; real tokens form a prefix of each row.
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1].

    Returns:
        ``(advantages, returns)``, both ``(B, T)``; ``returns = advantages + values``; zero on
        padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask
