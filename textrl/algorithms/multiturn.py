"""Advantages for multi-turn episodes: rewards per turn, GAE over the action tokens only.

In a multi-turn batch (``RolloutBatch.action_mask`` set) a row's response holds the policy's tokens
(actions) with env tokens between the turns. Env tokens are observations, not decisions: nothing
was chosen there, so there is no log-prob, value target or advantage at them, and they must not
add discount steps between two decisions. GAE therefore runs over each row's action tokens as if
they were contiguous (γ and λ applied once per action token, the env-token gaps skipped), the
value of the first action after a gap bootstrapping the last action before it, as verl and
OpenRLHF do for masked observation tokens. The state a value is read at still includes the env
tokens (the KV cache saw them), so V(s) of a turn's first token knows the tool's result.
"""

from __future__ import annotations

import torch

from textrl.algorithms.advantages import gae
from textrl.algorithms.kl import kl_penalty


def turn_shaped_rewards(
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    estimator: str = "k1",
):
    """Per-token rewards of a multi-turn batch: the env's rewards (each turn's reward on its last
    action token, the reward model's score on the episode's last) minus β × the KL penalty.

    Args:
        rewards: ``(B, T)`` float, the rollout's env rewards (``RolloutBatch.rewards``).
        logprobs, ref_logprobs: ``(B, T)`` untruncated log π and log π_ref of the tokens.
        mask: ``(B, T)`` 1.0 on action tokens (any pattern: gaps at env tokens).
        beta: KL coefficient β ≥ 0; estimator: ``k1`` | ``k2`` | ``k3``.

    Returns:
        ``(shaped, penalty)``, both ``(B, T)`` float, zero off the action tokens.
    """
    penalty = kl_penalty(logprobs, ref_logprobs, mask, estimator)
    return (rewards - beta * penalty) * mask.to(rewards.dtype), penalty


def gae_over_actions(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """GAE (Schulman et al. 2016, eq. 16) over each row's action tokens, skipping the gaps.

    Each row's action tokens are moved to the front in order (a stable sort of the mask), the
    ordinary :func:`~textrl.algorithms.advantages.gae` runs on that prefix, and the results go back
    to the action columns. With a prefix mask (single-turn) this is exactly ``gae``.

    Args:
        rewards: ``(B, T)`` per-token rewards; values: ``(B, T)`` V(s_t); mask: ``(B, T)`` 1.0 on
            action tokens; gamma: γ in [0, 1]; lam: λ in [0, 1].

    Returns:
        ``(advantages, returns)``, both ``(B, T)``, zero off the action tokens.
    """
    order = torch.argsort((mask <= 0).to(torch.int8), dim=1, stable=True)  # actions first, order kept
    adv, ret = gae(rewards.gather(1, order), values.gather(1, order), mask.gather(1, order), gamma, lam)
    return torch.zeros_like(adv).scatter_(1, order, adv), torch.zeros_like(ret).scatter_(1, order, ret)
