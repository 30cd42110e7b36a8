"""REINFORCE on the KL-shaped episode return, no critic (Williams 1992; RLOO: Kool et al. 2019,
Ahmadian et al. 2024).

Episode return ``G = r_RM(x, y) − β·Σ_t KL_t`` with ``KL_t`` the per-token KL estimate
(``algo.kl.estimator``, k1 = ``log π(a_t|s_t) − log π_ref(a_t|s_t)``) on the temperature-scaled,
untruncated log-probs of policy and reference. The loss is
``−mean_episodes((G − b)·Σ_t log π(a_t|s_t))`` with baseline b:

- ``none``: b = 0;
- ``moving_average``: b = exponential moving average of past batches' mean return
  (``baseline_decay``), 0 before the first update;
- ``leave_one_out``: with k samples per prompt (``rollout.samples_per_prompt=k``, k ≥ 2),
  b_i = mean of the other k − 1 returns of the same prompt (the RLOO estimator, unbiased).

One gradient step per rollout batch by default (the estimator is on-policy); minibatches
accumulate into it.
"""

from __future__ import annotations

import torch

from textrl.algorithms.base import Algorithm
from textrl.algorithms.kl import kl_penalty
from textrl.config import number, one_of
from textrl.config.choices import REINFORCE_BASELINES
from textrl.errors import TextRLError
from textrl.rollout.buffer import RolloutBatch

BASELINES = REINFORCE_BASELINES


def episode_returns(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """``(B,)`` KL-shaped returns ``score − β·Σ_t KL_t`` over real tokens, ``KL_t`` from
    :func:`~textrl.algorithms.kl.kl_penalty` (``logprobs`` untruncated, ``(B, T)`` like the rest)."""
    return scores - beta * kl_penalty(logprobs, ref_logprobs, mask, estimator).sum(1)


def leave_one_out_baseline(returns: torch.Tensor, k: int) -> torch.Tensor:
    """``(B,)`` mean of the other k − 1 returns in each group of k consecutive rows.

    Raises:
        TextRLError: k < 2 or k does not divide B.
    """
    if k < 2 or returns.numel() % k:
        raise TextRLError(
            f"rollout.samples_per_prompt: got {k}; expected k >= 2 dividing the batch "
            f"({returns.numel()}) for algo.baseline=leave_one_out"
        )
    groups = returns.view(-1, k)
    return ((groups.sum(1, keepdim=True) - groups) / (k - 1)).view(-1)


def reinforce_loss(logprobs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``−mean_i(A_i · Σ_t logπ(a_t|s_t))``: logprobs ``(B, T)`` with grad, mask ``(B, T)``,
    advantages ``(B,)`` (return minus baseline, no grad).

    Only real tokens the sampling distribution can still produce count: padding, and a token that
    top-k/top-p now cuts off (log-prob ≈ ``finfo.min``, e.g. a top-p boundary token whose recomputed
    probability differs in the last bit), are zeroed before the sum, so the loss stays finite; a
    cut-off token has no gradient, as its ratio of 0 gives it none in PPO.
    """
    possible = mask.bool() & (logprobs > torch.finfo(logprobs.dtype).min / 2)
    logprobs = torch.where(possible, logprobs, torch.zeros_like(logprobs))
    return -(logprobs.sum(1) * advantages.detach()).mean()


class Reinforce(Algorithm):
    """REINFORCE with a baseline (see the module docstring).

    Args (keyword-only; plus the loop's, see :class:`~textrl.Algorithm`, read here as: ``epochs``
    gradient steps per batch, 1 being the on-policy estimator, more reusing the batch without
    importance correction; ``minibatch_size`` episodes per forward pass, gradients accumulating to
    one step per epoch over the whole batch; ``micro_batch_size`` a smaller forward pass than that):
        baseline: ``none`` | ``moving_average`` | ``leave_one_out``.
        baseline_decay: EMA decay of the moving-average baseline.

    ``baseline`` and ``baseline_decay`` are checked at startup through :attr:`config_checks`.

    Raises:
        TextRLError: ``leave_one_out`` on a batch with fewer than 2
            samples per prompt (set ``rollout.samples_per_prompt``).
    """

    uses_value_head = False
    shuffle = False  # one step per epoch over the whole batch: the order only changes float rounding
    loss_average = "episodes"
    config_checks = {"baseline": one_of(*BASELINES), "baseline_decay": number(ge=0, lt=1)}

    def __init__(self, *, baseline: str = "moving_average", baseline_decay: float = 0.9, **loop):
        super().__init__(**loop)
        self.baseline, self.baseline_decay = baseline, baseline_decay
        self.running_return: float | None = None

    def step_sizes(self, batch_size: int) -> tuple[int, int]:
        """One optimizer step over the whole batch, forward passes of ``minibatch_size`` (or
        ``micro_batch_size``) episodes."""
        return batch_size, min(self.micro_batch_size or self.minibatch_size, self.minibatch_size)

    def baseline_values(self, returns: torch.Tensor, k: int) -> torch.Tensor:
        """``(B,)`` baseline for this batch's returns (updates the moving average)."""
        if self.baseline == "leave_one_out":
            return leave_one_out_baseline(returns, k)
        if self.baseline == "none":
            return torch.zeros_like(returns)
        b = torch.full_like(returns, self.running_return if self.running_return is not None else 0.0)
        mean = self.mean_across_processes(float(returns.mean()))  # one baseline on every process
        self.running_return = (
            mean
            if self.running_return is None
            else (self.baseline_decay * self.running_return + (1 - self.baseline_decay) * mean)
        )
        return b

    def prepare(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """``{"advantages"}``: ``(B,)`` KL-shaped return minus the baseline."""
        returns = episode_returns(
            batch.scores,
            batch.untruncated_logprobs,
            batch.ref_logprobs,
            batch.response_mask,
            self.kl_coef,
            self.kl_estimator,
        )
        return {"advantages": returns - self.baseline_values(returns, batch.samples_per_prompt)}

    def loss(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss/total`` = ``loss/policy``, the REINFORCE loss (mean over episodes)."""
        loss = reinforce_loss(self.response_logprobs(batch).sampled, batch.response_mask, prepared["advantages"])
        return {"loss/total": loss, "loss/policy": loss.detach()}

    def batch_metrics(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The spread of the advantages (how much the baseline leaves)."""
        advantages = prepared["advantages"]
        return {"policy/advantage_std": advantages.std() if advantages.numel() > 1 else 0.0}

    def state_dict(self) -> dict:
        """Optimizer, β controller and the moving-average baseline."""
        return {**super().state_dict(), "running_return": self.running_return}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        self.running_return = state["running_return"]
