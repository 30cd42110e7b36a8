"""REINFORCE on the KL-shaped episode return, no critic (Williams 1992; RLOO: Kool et al. 2019,
Ahmadian et al. 2024).

Episode return ``G = r_RM(x, y) − β·Σ_t (log π(a_t|s_t) − log π_ref(a_t|s_t))``. The loss is
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

from textrl.algorithms.base import Algorithm, make_adamw
from textrl.algorithms.ppo import KLConfig, check_finite, make_kl_controller
from textrl.config import number, one_of
from textrl.errors import TextRLError
from textrl.policies.hf_causal_lm import response_outputs
from textrl.policies.sampling import token_logprobs
from textrl.rollout.buffer import RolloutBatch

BASELINES = ("none", "moving_average", "leave_one_out")


def episode_returns(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """``(B,)`` KL-shaped returns ``score − β·Σ_t (logπ − logπ_ref)`` over real tokens."""
    return scores - beta * ((logprobs - ref_logprobs) * mask).sum(1)


def leave_one_out_baseline(returns: torch.Tensor, k: int) -> torch.Tensor:
    """``(B,)`` mean of the other k − 1 returns in each group of k consecutive rows.

    Raises:
        TextRLError: k < 2 or k does not divide B.
    """
    if k < 2 or returns.numel() % k:
        raise TextRLError(f"rollout.samples_per_prompt: got {k}; expected k >= 2 dividing the batch "
                          f"({returns.numel()}) for algo.baseline=leave_one_out")
    groups = returns.view(-1, k)
    return ((groups.sum(1, keepdim=True) - groups) / (k - 1)).view(-1)


def reinforce_loss(logprobs: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``−mean_i(A_i · Σ_t logπ(a_t|s_t))``: logprobs ``(B, T)`` with grad, mask ``(B, T)``,
    advantages ``(B,)`` (return minus baseline, no grad)."""
    return -((logprobs * mask).sum(1) * advantages.detach()).mean()


class Reinforce(Algorithm):
    """REINFORCE with a baseline (see the module docstring).

    Args:
        lr: AdamW learning rate.
        kl: β settings (``kl.init``; ``adaptive`` as in PPO).
        baseline: ``none`` | ``moving_average`` | ``leave_one_out``.
        baseline_decay: EMA decay of the moving-average baseline.
        epochs: gradient steps per batch (1 is the on-policy estimator; more reuse the batch
            without importance correction).
        minibatch_size: episodes per forward pass (gradients accumulate to one step).
        max_grad_norm: gradient-norm clip (``None`` = off).

    ``baseline`` and ``baseline_decay`` are checked at startup through :attr:`config_checks`.

    Raises:
        TextRLError: ``leave_one_out`` on a batch with fewer than 2
            samples per prompt (set ``rollout.samples_per_prompt``).
    """

    uses_value_head = False
    config_checks = {"baseline": one_of(*BASELINES), "baseline_decay": number(ge=0, lt=1)}

    def __init__(self, lr: float = 1.5e-4, kl: KLConfig = KLConfig(), baseline: str = "moving_average",
                 baseline_decay: float = 0.9, epochs: int = 1, minibatch_size: int = 16,
                 max_grad_norm: float | None = 1.0):
        self.lr, self.baseline, self.baseline_decay = lr, baseline, baseline_decay
        self.epochs, self.minibatch_size, self.max_grad_norm = epochs, minibatch_size, max_grad_norm
        self.kl_controller = make_kl_controller(kl)
        self.running_return: float | None = None

    def setup(self, policy, reference, accelerator=None) -> None:
        """AdamW over the LM; the value head is unused and frozen. Prepared by ``accelerator`` if given."""
        self.policy = policy
        policy.value_head.requires_grad_(False)
        optimizer = make_adamw([p for p in policy.lm.parameters() if p.requires_grad], lr=self.lr)
        self.model, self.optimizer = self.distribute(policy, optimizer, accelerator)

    def baseline_values(self, returns: torch.Tensor, k: int) -> torch.Tensor:
        """``(B,)`` baseline for this batch's returns (updates the moving average)."""
        if self.baseline == "leave_one_out":
            return leave_one_out_baseline(returns, k)
        if self.baseline == "none":
            return torch.zeros_like(returns)
        b = torch.full_like(returns, self.running_return if self.running_return is not None else 0.0)
        mean = self.mean_across_processes(float(returns.mean()))  # one baseline on every process
        self.running_return = mean if self.running_return is None else (
            self.baseline_decay * self.running_return + (1 - self.baseline_decay) * mean)
        return b

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """One REINFORCE step on ``batch``."""
        beta = self.kl_controller.value
        mask = batch.response_mask
        returns = episode_returns(batch.scores, batch.logprobs, batch.ref_logprobs, mask, beta)
        advantages = returns - self.baseline_values(returns, batch.samples_per_prompt)
        check_finite(advantages, "advantages")
        total = 0.0
        for _ in range(self.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for start in range(0, batch.batch_size, self.minibatch_size):
                idx = torch.arange(start, min(start + self.minibatch_size, batch.batch_size), device=mask.device)
                mb = batch.select(idx)
                logits, _ = response_outputs(self.model, mb.input_ids, mb.attention_mask, mb.response_length)
                logprobs = token_logprobs(logits[..., :mb.vocab_size], mb.response_ids, mb.sampling)
                loss = reinforce_loss(logprobs, mb.response_mask, advantages[idx]) * len(idx) / batch.batch_size
                check_finite(loss, "loss/policy")
                self.backward(loss)
                total += float(loss)
            if self.max_grad_norm is not None:
                norm = self.clip_grad_norm(self.policy.lm.parameters(), self.max_grad_norm)
                if norm is not None:
                    check_finite(norm, "gradient norm")
            self.optimizer.step()
        episode_kl = ((batch.logprobs - batch.ref_logprobs) * mask).sum(1)
        self.kl_controller.update(self.mean_across_processes(float(episode_kl.mean())), self.episodes_seen(batch))
        return {"loss/policy": total, "objective/kl": float(episode_kl.mean()),
                "objective/score": float(batch.scores.mean()), "objective/rlhf_reward": float(returns.mean()),
                "kl/beta": beta, "policy/advantage_std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
                "episode/length": float(mask.sum(1).mean())}

    def state_dict(self) -> dict:
        """Optimizer, β controller and the moving-average baseline."""
        return {"optimizer": self.optimizer.state_dict(), "kl_controller": self.kl_controller.state_dict(),
                "running_return": self.running_return}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.running_return = state["running_return"]
