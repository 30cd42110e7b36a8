"""The KL penalty: per-token and per-episode KL, KL-shaped rewards and the β controllers.

Per-token reward (Ziegler et al. 2019; Stiennon et al. 2020; InstructGPT eq. 2):
``r_t = −β·(log π(a_t|s_t) − log π_ref(a_t|s_t)) + 1[t = T]·r_RM(x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from textrl.errors import TextRLError


def episode_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-episode KL estimate ``Σ_t (log π(a_t|s_t) − log π_ref(a_t|s_t))`` over real tokens
    (the k1 estimator summed over the response; nats per episode).

    Args:
        logprobs: ``(B, T)`` float log π of the sampled tokens.
        ref_logprobs: ``(B, T)`` float log π_ref of the same tokens.
        mask: ``(B, T)`` 1.0 on real response tokens.

    Returns:
        ``(B,)`` float, in the dtype of ``logprobs``.
    """
    return ((logprobs - ref_logprobs) * mask.to(logprobs.dtype)).sum(1)


def kl_shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                      mask: torch.Tensor, beta: float):
    """Per-token rewards with the KL penalty, the score paid on each episode's last token.

    Args:
        scores: ``(B,)`` reward-model scores r_RM(x, y).
        logprobs: ``(B, T)`` log π(a_t|s_t) of the sampled tokens.
        ref_logprobs: ``(B, T)`` log π_ref(a_t|s_t).
        mask: ``(B, T)`` 1.0 on real response tokens (a prefix of each row, ≥ 1 token).
        beta: KL coefficient β ≥ 0.

    Returns:
        ``(rewards, kl)``: ``(B, T)`` shaped rewards and ``(B, T)`` per-token KL estimates
        ``log π − log π_ref`` (zero on padding).
    """
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    rewards = -beta * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards = rewards.scatter_add(1, last[:, None], scores.to(rewards.dtype)[:, None])
    return rewards * mask, kl


@dataclass
class KLConfig:
    """KL penalty settings: ``init`` β, ``adaptive`` on/off, ``target`` KL (nats per episode) and
    ``horizon`` (episodes) of the adaptive controller (Ziegler et al. 2019)."""

    init: float = 0.05
    adaptive: bool = True
    target: float = 6.0
    horizon: int = 10000


def make_kl_controller(kl: "KLConfig | dict") -> "FixedKLController":
    """A :class:`FixedKLController` or :class:`AdaptiveKLController` from ``kl``.

    Raises:
        TextRLError: as the controllers (negative β, non-positive target or horizon).
    """
    kl = KLConfig(**kl) if isinstance(kl, dict) else kl
    if kl.adaptive:
        return AdaptiveKLController(kl.init, kl.target, kl.horizon)
    return FixedKLController(kl.init)


class FixedKLController:
    """A constant KL coefficient β (``update`` does nothing)."""

    def __init__(self, init: float):
        if init < 0:
            raise TextRLError(f"algo.kl.init: got {init}; expected β >= 0")
        self.value = float(init)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: β stays at its initial value."""

    def state_dict(self) -> dict:
        """``{"value": β}``, for checkpoints."""
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        """Restore β from :meth:`state_dict`."""
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Adaptive β (Ziegler et al. 2019, §2.2): steer the measured KL toward ``target``.

    After each update with observed KL (nats per episode, summed over tokens) over ``n_steps``
    episodes: ``e = clip(KL/target − 1, −0.2, 0.2)`` and ``β ← β·(1 + e·n_steps/horizon)``.

    Raises:
        TextRLError: ``target`` or ``horizon`` not positive, or ``init`` negative.
    """

    def __init__(self, init: float, target: float, horizon: int):
        super().__init__(init)
        if not target > 0:
            raise TextRLError(f"algo.kl.target: got {target}; expected a KL target > 0 (nats)")
        if not horizon > 0:
            raise TextRLError(f"algo.kl.horizon: got {horizon}; expected a positive number of episodes")
        self.target, self.horizon = float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Apply one proportional step given the batch's mean KL and its episode count."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
