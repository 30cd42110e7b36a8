"""REINFORCE on the KL-shaped return, no critic (Williams 1992; RLOO: Kool et al. 2019,
Ahmadian et al. 2024), with turn-level credit.

Episode return ``G = Σ_t r_t − β·Σ_t KL_t``: the env's rewards (``RolloutBatch.rewards``; a
single-turn episode's one reward is the reward model's score) minus the KL penalty, ``KL_t`` the
per-token estimate (``algo.kl.estimator``, k1 = ``log π(a_t|s_t) − log π_ref(a_t|s_t)``) on the
temperature-scaled, untruncated log-probs of policy and reference. Each action is credited with
its reward-to-go: the return minus the rewards paid before it
(:func:`~textrl.algorithms.advantages.rewards_before`; the KL term stays the whole episode's), so a
multi-turn episode's later turns are not credited with earlier turns' rewards; for a single-turn
episode every action's reward-to-go is ``G``. The loss is
``−mean_episodes(Σ_t (G − b − R_{<t})·log π(a_t|s_t))`` with baseline b, computed as
``(G − b)·Σ_t log π(a_t|s_t) − Σ_t R_{<t}·log π(a_t|s_t)``:

- ``none``: b = 0;
- ``moving_average``: b = exponential moving average of past batches' mean return
  (``baseline_decay``), 0 before the first update;
- ``leave_one_out``: with k samples per prompt (``rollout.samples_per_prompt=k``, k ≥ 2),
  b_i = mean of the other k − 1 returns of the same prompt (the RLOO estimator, unbiased);
- ``same_state``: a baseline per state: the rollout branches K continuations from each chosen
  state (``algo.branch``, :mod:`textrl.rollout.branching`) and an action's baseline is the mean
  return of the continuations of the state its segment started from (a same-state group; with
  ``algo.branch.at=turns``, one per turn). The continuations share nothing with the episode after
  that state, so the baseline is unbiased at every action.

The baseline depends on the episode only through other episodes (or past batches), never on its
own actions, so it leaves the gradient unbiased at every turn.

One gradient step per rollout batch by default (the estimator is on-policy); minibatches
accumulate into it.
"""

from __future__ import annotations

import torch

from textrl.algorithms.advantages import rewards_before, state_values
from textrl.algorithms.base import Algorithm
from textrl.algorithms.kl import kl_penalty
from textrl.config import number, one_of
from textrl.config.choices import REINFORCE_BASELINES
from textrl.config.schema import BranchConfig
from textrl.errors import TextRLError
from textrl.rollout.buffer import RolloutBatch

BASELINES = REINFORCE_BASELINES


def episode_returns(
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """``(B,)`` KL-shaped returns ``Σ_t r_t − β·Σ_t KL_t`` over the action tokens: ``rewards`` the
    env's per-token rewards, ``KL_t`` from :func:`~textrl.algorithms.kl.kl_penalty` (``logprobs``
    untruncated, ``(B, T)`` like the rest)."""
    return rewards.sum(1) - beta * kl_penalty(logprobs, ref_logprobs, mask, estimator).sum(1)


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


def reinforce_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, earlier: torch.Tensor | None = None
) -> torch.Tensor:
    """``−mean_i(Σ_t (A_i − R_{<t})·log π(a_t|s_t))``, computed as
    ``−mean_i(A_i·Σ_t log π_t − Σ_t R_{<t}·log π_t)``.

    Args:
        logprobs: ``(B, T)`` log π(a_t|s_t) with grad.
        mask: ``(B, T)`` 1.0 on action tokens.
        advantages: ``(B,)`` each episode's return minus its baseline (no grad).
        earlier: ``(B, T)`` the rewards paid before each action
            (:func:`~textrl.algorithms.advantages.rewards_before`, no grad), or ``None`` (all 0: a
            single-turn batch).

    Only actions the sampling distribution can still produce count: padding, env tokens, and a
    token that top-k/top-p now cuts off (log-prob ≈ ``finfo.min``, e.g. a top-p boundary token whose
    recomputed probability differs in the last bit), are zeroed before the sum, so the loss stays
    finite; a cut-off token has no gradient, as its ratio of 0 gives it none in PPO.
    """
    possible = mask.bool() & (logprobs > torch.finfo(logprobs.dtype).min / 2)
    logprobs = torch.where(possible, logprobs, torch.zeros_like(logprobs))
    total = logprobs.sum(1) * advantages.detach()
    if earlier is not None:
        total = total - (logprobs * earlier.detach()).sum(1)
    return -total.mean()


class Reinforce(Algorithm):
    """REINFORCE with a baseline (see the module docstring).

    Args (keyword-only; plus the loop's, see :class:`~textrl.Algorithm`, read here as: ``epochs``
    gradient steps per batch, 1 being the on-policy estimator, more reusing the batch without
    importance correction; ``minibatch_size`` episodes per forward pass, gradients accumulating to
    one step per epoch over the whole batch; ``micro_batch_size`` a smaller forward pass than that):
        baseline: ``none`` | ``moving_average`` | ``leave_one_out`` | ``same_state``.
        baseline_decay: EMA decay of the moving-average baseline.
        branch: where the rollout branches and K, for ``same_state``
            (:class:`~textrl.config.schema.BranchConfig`, or its dict).

    ``baseline`` and ``baseline_decay`` are checked at startup through :attr:`config_checks`.

    Raises:
        TextRLError: ``leave_one_out`` on a batch with fewer than 2
            samples per prompt (set ``rollout.samples_per_prompt``).
    """

    uses_value_head = False
    shuffle = False  # one step per epoch over the whole batch: the order only changes float rounding
    loss_average = "episodes"
    config_checks = {"baseline": one_of(*BASELINES), "baseline_decay": number(ge=0, lt=1)}

    def __init__(
        self,
        *,
        baseline: str = "moving_average",
        baseline_decay: float = 0.9,
        branch: BranchConfig | dict = BranchConfig(at="turns"),
        **loop,
    ):
        super().__init__(**loop)
        self.baseline, self.baseline_decay = baseline, baseline_decay
        self.running_return: float | None = None
        if baseline == "same_state":
            self.branching = BranchConfig(**branch) if isinstance(branch, dict) else branch

    def step_sizes(self, batch_size: int) -> tuple[int, int]:
        """One optimizer step over the whole batch, forward passes of ``minibatch_size`` (or
        ``micro_batch_size``) episodes."""
        return batch_size, min(self.micro_batch_size or self.minibatch_size, self.minibatch_size)

    def baseline_values(self, returns: torch.Tensor, k: int) -> torch.Tensor:
        """``(B,)`` baseline for this batch's returns (updates the moving average)."""
        if self.baseline == "leave_one_out":
            return leave_one_out_baseline(returns, k)
        if self.baseline in ("none", "same_state"):  # same_state: per action, see prepare
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
        """``{"advantages": (B,) KL-shaped return minus the baseline, "earlier": (B, T) what each
        action's credit loses besides: the rewards paid before it, and with ``same_state`` its
        state's baseline}`` (see the module docstring)."""
        mask = batch.action_mask
        returns = episode_returns(
            batch.rewards, batch.untruncated_logprobs, batch.ref_logprobs, mask, self.kl_coef, self.kl_estimator
        )
        advantages = returns - self.baseline_values(returns, batch.samples_per_prompt)
        earlier = rewards_before(batch.rewards, mask)
        if self.baseline == "same_state":
            if batch.branches is None:
                raise TextRLError("algo.baseline: got 'same_state' for a batch without branches; expected branching")
            earlier = earlier + state_values(batch.branches.mean, batch.branches.mask, mask)
        return {"advantages": advantages, "earlier": earlier}

    def loss(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss/total`` = ``loss/policy``, the REINFORCE loss (mean over episodes)."""
        logprobs = self.response_logprobs(batch).sampled
        loss = reinforce_loss(logprobs, batch.action_mask, prepared["advantages"], prepared["earlier"])
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
