"""Group-relative policy optimisation (Shao et al. 2024, DeepSeekMath §4.1), outcome supervision.

For a group of G responses to one prompt with scores r_1..r_G:
``A_i = (r_i − mean(r)) / (std(r) + eps)`` for every token of response i. The loss per token is the
PPO clipped surrogate with this advantage plus β·KL, KL by the k3 estimator
``exp(log π_ref − log π) − (log π_ref − log π) − 1`` (unbiased, non-negative; ``algo.kl.estimator``
chooses k1/k2/k3 through textrl's shared :func:`~textrl.algorithms.kl.kl_penalty`); no critic.

The ratio uses the sampling distribution (after top-k/top-p); the KL term compares the current
policy's temperature-scaled, *untruncated* log-probs with π_ref's, so it is 0 when π = π_ref under
any top-k/top-p.
"""

from __future__ import annotations

import torch

import textrl
from textrl.algorithms import KLConfig
from textrl.algorithms.base import make_adamw
from textrl.algorithms.advantages import masked_mean
from textrl.algorithms.losses import ppo_policy_loss
from textrl.algorithms.kl import episode_kl, kl_penalty
from textrl.algorithms.ppo import check_finite, make_kl_controller
from textrl.policies.hf_causal_lm import response_outputs
from textrl.policies.sampling import token_logprobs


def group_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Per-episode advantages: score minus its group's mean (divided by the group's std if ``scale``).

    Args:
        scores: ``(B,)`` rewards; rows ``[g*G, (g+1)*G)`` share a prompt.
        group_size: G ≥ 2, dividing B.

    Returns:
        ``(B,)`` float32 advantages.

    Raises:
        textrl.TextRLError: G < 2 or G does not divide B.
    """
    if group_size < 2 or scores.numel() % group_size:
        raise textrl.TextRLError(f"algo.group_size: got {group_size}; expected an integer >= 2 dividing "
                                 f"rollout.batch_size={scores.numel()}")
    groups = scores.float().view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale:
        centred = centred / (groups.std(1, keepdim=True) + eps)
    return centred.view(-1)


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, clip_range: float, beta: float,
              kl_logprobs=None, estimator: str = "k3"):
    """GRPO loss terms on token tensors ``(B, T)`` with per-episode ``advantages`` ``(B,)``.

    Args:
        logprobs: ``(B, T)`` current log π under the sampling distribution (with grad), for the ratio.
        old_logprobs: ``(B, T)`` the rollout's log π_old, same distribution.
        ref_logprobs: ``(B, T)`` log π_ref (temperature-scaled, untruncated).
        advantages: ``(B,)`` group-relative advantages.
        mask: ``(B, T)`` 1.0 on real tokens.
        clip_range: ε > 0.
        beta: KL coefficient β.
        kl_logprobs: ``(B, T)`` current log π, temperature-scaled and untruncated (with grad), for
            the KL term; ``None`` uses ``logprobs`` (right when nothing truncates).
        estimator: ``k1`` | ``k2`` | ``k3`` (:func:`~textrl.algorithms.kl.kl_penalty`).

    Returns a dict with ``loss`` (scalar to minimise), ``policy`` (clipped surrogate),
    ``kl`` (mean per-token KL estimate), ``clipfrac``.
    """
    pg = ppo_policy_loss(logprobs, old_logprobs, advantages[:, None].expand_as(logprobs), mask, clip_range)
    kl = masked_mean(kl_penalty(logprobs if kl_logprobs is None else kl_logprobs, ref_logprobs, mask, estimator), mask)
    return {"loss": pg.loss + beta * kl, "policy": pg.loss, "kl": kl, "clipfrac": pg.clipfrac}


class GRPO(textrl.Algorithm):
    """GRPO as a textrl :class:`~textrl.Algorithm` (see the module docstring).

    Args:
        lr: AdamW learning rate.
        kl: β settings (``kl.init`` is β; adaptive control as in PPO is optional).
        group_size: responses per prompt G (the collector runs each prompt G times per batch).
        clip_range: ratio clip ε.
        epochs: passes over each batch.
        minibatch_size: episodes per gradient step (a divisor of the batch size).
        max_grad_norm: gradient-norm clip (``None`` = off).
        scale_rewards: divide by the group's std (GRPO); ``False`` gives Dr. GRPO-style centring.
    """

    uses_value_head = False

    def __init__(self, lr: float = 1e-5, kl: KLConfig = KLConfig(init=0.04, adaptive=False, estimator="k3"),
                 group_size: int = 4,
                 clip_range: float = 0.2, epochs: int = 1, minibatch_size: int = 8, max_grad_norm: float | None = 1.0,
                 scale_rewards: bool = True):
        if group_size < 2:
            raise textrl.TextRLError(f"algo.group_size: got {group_size}; expected an integer >= 2")
        self.lr, self.group_size, self.clip_range = lr, group_size, clip_range
        self.epochs, self.minibatch_size, self.max_grad_norm = epochs, minibatch_size, max_grad_norm
        self.scale_rewards = scale_rewards
        self.samples_per_prompt = group_size
        self.kl_controller = make_kl_controller(kl)
        self.kl_estimator = (KLConfig(**kl) if isinstance(kl, dict) else kl).estimator
        self.generator = torch.Generator().manual_seed(torch.initial_seed())

    def setup(self, policy, reference, accelerator=None) -> None:
        """AdamW over the LM's parameters (the value head is unused and frozen); with several
        processes the model and optimizer go through ``accelerator`` (textrl's ``distribute``)."""
        self.policy = policy
        policy.value_head.requires_grad_(False)
        optimizer = make_adamw([p for p in policy.lm.parameters() if p.requires_grad], lr=self.lr)
        self.model, self.optimizer = self.distribute(policy, optimizer, accelerator)

    def update(self, batch) -> dict[str, float]:
        """One GRPO update on a batch whose rows come in groups of ``group_size``."""
        if batch.batch_size % self.minibatch_size:
            raise textrl.TextRLError(f"algo.minibatch_size: got {self.minibatch_size}; expected a divisor of "
                                     f"rollout.batch_size={batch.batch_size}")
        beta = self.kl_controller.value
        advantages = group_advantages(batch.scores, self.group_size, self.scale_rewards)
        sums, steps = {}, 0
        for _ in range(self.epochs):
            order = torch.randperm(batch.batch_size, generator=self.generator).to(batch.input_ids.device)
            for start in range(0, batch.batch_size, self.minibatch_size):
                idx = order[start:start + self.minibatch_size]
                mb = batch.select(idx)
                logits, _ = response_outputs(self.model, mb.input_ids, mb.attention_mask, mb.response_length)
                logits = logits[..., :mb.vocab_size]
                logprobs = token_logprobs(logits, mb.response_ids, mb.sampling)
                kl_logprobs = (token_logprobs(logits, mb.response_ids, mb.sampling.untruncated())
                               if mb.sampling.truncates else logprobs)
                terms = grpo_loss(logprobs, mb.logprobs, mb.ref_logprobs, advantages[idx], mb.response_mask,
                                  self.clip_range, beta, kl_logprobs, self.kl_estimator)
                check_finite(terms["loss"], "loss/total")
                self.optimizer.zero_grad(set_to_none=True)
                self.backward(terms["loss"])
                if self.max_grad_norm is not None:
                    self.clip_grad_norm(self.policy.lm.parameters(), self.max_grad_norm)
                self.optimizer.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                steps += 1
        kl_k1 = episode_kl(batch.kl_logprobs, batch.ref_logprobs, batch.response_mask)  # objective/kl: the k1 sum
        self.kl_controller.update(self.mean_across_processes(float(kl_k1.mean())))
        return {
            "loss/policy": sums["policy"] / steps, "loss/kl": sums["kl"] / steps,
            "policy/clipfrac": sums["clipfrac"] / steps, "kl/beta": beta,
            "objective/kl": float(kl_k1.mean()), "objective/score": float(batch.scores.mean()),
            "objective/rlhf_reward": float((batch.scores - beta * kl_k1).mean()),
            "episode/length": float(batch.response_mask.sum(1).mean()),
        }

    def state_dict(self) -> dict:
        """Optimizer, β controller and shuffling RNG."""
        return {"optimizer": self.optimizer.state_dict(), "kl_controller": self.kl_controller.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.generator.set_state(state["generator"])
