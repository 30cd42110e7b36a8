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


PROPORTIONAL_GAIN = 2.0
"""K_p of :class:`AdaptiveKLController`: β's immediate response to the KL's relative error (a KL
50% over target multiplies β by e^(2·0.5) ≈ 2.7 at once)."""
ERROR_CLIP = 1.0
"""The relative error ``KL/target − 1`` is clipped to ±1 before the controller uses it."""


class AdaptiveKLController(FixedKLController):
    """Adaptive β: a proportional-integral (PI) controller in log β that steers the measured KL
    toward ``target``, with an integral that never winds below β's starting value.

    After each update with observed KL (``objective/kl``: nats per episode, the k1 sum over tokens,
    batch mean), with ``e = clip(KL/target − 1, −1, 1)``::

        I ← max(0, I + e)                    (the integral, clamped at 0: anti-windup)
        β = init · exp(K_p·e + I / horizon)  (K_p = 2, :data:`PROPORTIONAL_GAIN`)

    Ziegler et al. (2019, §2.2) steer β with a proportional rule ``β ← β·(1 + K_β·e)``, e clipped to
    ±0.2, at a gain meant for thousands of updates (a horizon of 10,000 episodes). Over the tens of
    updates of a CPU run that rule is too slow twice over: every policy starts at π_ref, so the KL
    sits below target for the first updates and the rule shrinks β all the while (integrator
    windup), and once the KL overshoots, β climbs back by at most ``0.2·K_β`` per update. Here the
    integral term is the rule's memory (``horizon`` updates to move β by a factor e at a constant
    error of 1) but cannot go below 0, so the warm-up below target leaves β's baseline at ``init``;
    the proportional term is the immediate response in both directions: β is smaller while the KL is
    well below target (the policy moves faster toward it) and jumps as soon as it overshoots. The
    error is the same relative error as Ziegler et al.'s; the control acts on log β, so β stays
    positive and a gain is a factor, whatever β's scale.

    ``init`` = 0 keeps β at 0 (no penalty), as a fixed β of 0 would.

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
        self.init, self.target, self.horizon = float(init), float(target), float(horizon)
        self.integral = 0.0

    def update(self, current_kl: float) -> None:
        """One PI step from the batch's mean KL per episode (nats)."""
        error = min(max(current_kl / self.target - 1.0, -ERROR_CLIP), ERROR_CLIP)
        self.integral = max(0.0, self.integral + error)
        self.value = self.init * math.exp(PROPORTIONAL_GAIN * error + self.integral / self.horizon)

    def state_dict(self) -> dict:
        """``{"value": β, "integral": I}``, for checkpoints."""
        return {"value": self.value, "integral": self.integral}

    def load_state_dict(self, state: dict) -> None:
        """Restore β and the integral from :meth:`state_dict`."""
        super().load_state_dict(state)
        self.integral = float(state["integral"])
