"""The KL penalty: per-token KL estimators, KL-shaped rewards and the KL coefficient β controllers.

Per-token reward (Ziegler et al. 2019; Stiennon et al. 2020; InstructGPT eq. 2):
``r_t = −β·KL_t + 1[t = T]·r_RM(x, y)`` with ``KL_t`` an estimate of KL(π ‖ π_ref) at step t from the
sampled token (:func:`kl_penalty`; k1 = ``log π(a_t|s_t) − log π_ref(a_t|s_t)`` by default); in a
multi-turn episode the env's turn rewards take the place of the single ``r_RM`` term.

Both log-probs are those of the temperature-scaled, *untruncated* distributions (the rollout's
``untruncated_logprobs`` and ``ref_logprobs``), never the top-k/top-p sampling distribution, so the KL is
exactly 0 when π = π_ref. The logged ``objective/kl`` is always the k1 sum per episode.
"""

from __future__ import annotations

import math

import torch

from textrl.config.choices import KL_ESTIMATORS
from textrl.config.schema import KLConfig
from textrl.errors import TextRLError


def check_estimator(estimator: str) -> None:
    """Raise :class:`TextRLError` unless ``estimator`` is one of :data:`KL_ESTIMATORS`."""
    if estimator not in KL_ESTIMATORS:
        raise TextRLError(f"algo.kl.estimator: got {estimator!r}; expected one of k1, k2, k3")


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from tokens sampled from π (Schulman, "Approximating
    KL divergence", 2020).

    With ``log r = log π_ref(a|s) − log π(a|s)``:

    - ``k1 = −log r`` (unbiased, can be negative; InstructGPT's penalty);
    - ``k2 = ½·(log r)²`` (biased, low variance, ≥ 0);
    - ``k3 = (r − 1) − log r`` (unbiased, ≥ 0; GRPO's term, Shao et al. 2024).

    Padding positions are set to 0 *before* the arithmetic, so a log-prob of ``finfo.min`` there
    never becomes an inf or NaN.

    Args:
        logprobs: ``(B, T)`` float log π(a_t|s_t) (untruncated, temperature-scaled).
        ref_logprobs: ``(B, T)`` float log π_ref(a_t|s_t), same distribution family.
        mask: ``(B, T)`` 1.0 on real response tokens.
        estimator: ``k1`` | ``k2`` | ``k3``.

    Returns:
        ``(B, T)`` per-token estimates in nats, dtype of ``logprobs``, 0 on padding.

    Raises:
        TextRLError: unknown ``estimator`` (named as ``algo.kl.estimator``).
    """
    check_estimator(estimator)
    real = mask.bool()
    log_ratio = torch.where(real, logprobs - ref_logprobs.to(logprobs.dtype), torch.zeros_like(logprobs))
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    else:  # k3 with log r = −log_ratio: (r − 1) − log r
        kl = torch.expm1(-log_ratio) + log_ratio
    return torch.where(real, kl, torch.zeros_like(kl))


def kl_shaped_rewards(
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    estimator: str = "k1",
):
    """Per-token rewards with the KL penalty: the env's rewards minus β × the per-token penalty.

    Args:
        rewards: ``(B, T)`` the env's per-token rewards (``RolloutBatch.rewards``: the reward
            model's score on an episode's last action, turn rewards on their turn's last action).
        logprobs: ``(B, T)`` log π(a_t|s_t) of the sampled tokens (untruncated: the rollout's
            ``untruncated_logprobs``).
        ref_logprobs: ``(B, T)`` log π_ref(a_t|s_t).
        mask: ``(B, T)`` 1.0 on action tokens.
        beta: KL coefficient β ≥ 0.
        estimator: per-token penalty ``k1`` | ``k2`` | ``k3`` (:func:`kl_penalty`).

    Returns:
        ``(shaped, penalty)``: ``(B, T)`` shaped rewards ``r_t − β·penalty_t`` and the ``(B, T)``
        per-token penalty, both zero off the action tokens.
    """
    penalty = kl_penalty(logprobs, ref_logprobs, mask, estimator)
    return (rewards - beta * penalty) * mask.to(rewards.dtype), penalty


def episode_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` k1 KL per episode, ``Σ_t log π(a_t|s_t) − log π_ref(a_t|s_t)`` over real tokens
    (nats): the logged ``objective/kl`` and the quantity the adaptive controller steers."""
    return kl_penalty(logprobs, ref_logprobs, mask, "k1").sum(1)


def make_kl_controller(kl: "KLConfig | dict") -> "FixedKLController":
    """A :class:`FixedKLController` or :class:`AdaptiveKLController` from ``kl``.

    Raises:
        TextRLError: a value out of range (``init`` < 0, ``target`` or ``horizon`` ≤ 0, an unknown
            ``estimator``), named by its ``algo.kl.*`` key.
    """
    kl = KLConfig(**kl) if isinstance(kl, dict) else kl
    check_estimator(kl.estimator)
    if kl.adaptive:
        return AdaptiveKLController(kl.init, kl.target, kl.horizon)
    return FixedKLController(kl.init)


class FixedKLController:
    """A constant KL coefficient β (``update`` does nothing; ``algo.kl.adaptive=false``).

    Raises:
        TextRLError: ``init`` negative or not finite.
    """

    def __init__(self, init: float):
        if not 0 <= init < math.inf:
            raise TextRLError(f"algo.kl.init: got {init}; expected a finite β >= 0")
        self.value = float(init)

    def update(self, current_kl: float) -> None:
        """No-op: β stays at its initial value."""

    def state_dict(self) -> dict:
        """``{"value": β}``, for checkpoints."""
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        """Restore β from :meth:`state_dict`."""
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Adaptive β (Ziegler et al. 2019, §2.2): steer the measured KL toward ``target``.

    After each update with observed KL (``objective/kl``: nats per episode, the k1 sum over
    tokens, batch mean): ``e = clip(KL/target − 1, −0.2, 0.2)`` and ``β ← β·(1 + e/horizon)``
    (the paper's ``β ← β·(1 + K_β·e)`` with ``K_β = 1/horizon``).

    Units: Ziegler et al. write the gain as ``n_steps/horizon`` with ``n_steps`` the episodes in the
    batch and ``horizon`` = 10,000 episodes; at their 512 episodes per update β moves by up to 1%
    per update, over thousands of updates. Here ``horizon`` counts **updates**, so the gain does not
    shrink with the batch: with the default ``horizon=5`` β moves by up to 0.2/5 = 4% per update
    (×1.5 in about 10 updates), enough to settle within a 60-update run of 16–32 episodes.
    The old setting ``horizon=H`` episodes at batch size B is ``horizon=H/B`` here.

    Raises:
        TextRLError: ``target`` or ``horizon`` not a finite positive number, or ``init`` negative
            or not finite.
    """

    def __init__(self, init: float, target: float, horizon: float):
        super().__init__(init)
        if not 0 < target < math.inf:
            raise TextRLError(f"algo.kl.target: got {target}; expected a finite KL target > 0 (nats per episode)")
        if not 0 < horizon < math.inf:
            raise TextRLError(f"algo.kl.horizon: got {horizon}; expected a finite positive number of updates")
        self.target, self.horizon = float(target), float(horizon)

    def update(self, current_kl: float) -> None:
        """One proportional step from the batch's mean KL per episode (nats)."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error / self.horizon
