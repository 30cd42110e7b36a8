"""Group-relative policy optimisation (Shao et al. 2024, DeepSeekMath §4.1), outcome supervision.

For a group of G responses to one prompt with scores r_1..r_G:
``A_i = (r_i − mean(r)) / (std(r) + eps)`` for every token of response i. The loss per token is the
PPO clipped surrogate with this advantage plus β·KL, KL by the k3 estimator
``exp(log π_ref − log π) − (log π_ref − log π) − 1`` (unbiased, non-negative; ``algo.kl.estimator``
chooses k1/k2/k3 through textrl's shared :func:`textrl.kl_penalty`); no critic.

The ratio uses the sampling distribution (after top-k/top-p); the KL term compares the current
policy's temperature-scaled, *untruncated* log-probs with π_ref's, so it is 0 when π = π_ref under
any top-k/top-p.
"""

from __future__ import annotations

import torch

import textrl
from textrl import KLConfig, episode_kl, kl_penalty, masked_mean, ppo_policy_loss


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
        raise textrl.TextRLError(
            f"algo.group_size: got {group_size}; expected an integer >= 2 dividing rollout.batch_size={scores.numel()}"
        )
    groups = scores.float().view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale:
        centred = centred / (groups.std(1, keepdim=True) + eps)
    return centred.view(-1)


def grpo_loss(
    logprobs,
    old_logprobs,
    ref_logprobs,
    advantages,
    mask,
    clip_range: float,
    beta: float,
    untruncated_logprobs=None,
    estimator: str = "k3",
):
    """GRPO loss terms on token tensors ``(B, T)`` with per-episode ``advantages`` ``(B,)``.

    Args:
        logprobs: ``(B, T)`` current log π under the sampling distribution (with grad), for the ratio.
        old_logprobs: ``(B, T)`` the rollout's log π_old, same distribution.
        ref_logprobs: ``(B, T)`` log π_ref (temperature-scaled, untruncated).
        advantages: ``(B,)`` group-relative advantages.
        mask: ``(B, T)`` 1.0 on real tokens.
        clip_range: ε > 0.
        beta: KL coefficient β.
        untruncated_logprobs: ``(B, T)`` current log π, temperature-scaled and untruncated (with grad), for
            the KL term; ``None`` uses ``logprobs`` (right when nothing truncates).
        estimator: ``k1`` | ``k2`` | ``k3`` (:func:`textrl.kl_penalty`).

    Returns a dict with ``loss`` (scalar to minimise), ``policy`` (clipped surrogate),
    ``kl`` (mean per-token KL estimate), ``clipfrac``.
    """
    pg = ppo_policy_loss(logprobs, old_logprobs, advantages[:, None].expand_as(logprobs), mask, clip_range)
    current = logprobs if untruncated_logprobs is None else untruncated_logprobs
    kl = masked_mean(kl_penalty(current, ref_logprobs, mask, estimator), mask)
    return {"loss": pg.loss + beta * kl, "policy": pg.loss, "kl": kl, "clipfrac": pg.clipfrac}


class GRPO(textrl.Algorithm):
    """GRPO as a textrl :class:`~textrl.Algorithm` (see the module docstring): it supplies the
    group advantages (:meth:`prepare`) and the minibatch loss (:meth:`loss`); textrl's loop does
    the rest (epochs, shuffled minibatches, micro-batches, clipping, finite checks, metrics).

    Args (keyword-only; plus the loop's ``lr``, ``epochs``, ``minibatch_size``,
    ``micro_batch_size``, ``max_grad_norm``, ``weight_decay`` inherited from :class:`textrl.Algorithm`):
        kl: β settings (``kl.init`` is β; adaptive control as in PPO is optional); restated here
            because GRPO's default estimator is k3.
        group_size: responses per prompt G (the collector runs each prompt G times per batch).
        clip_range: ratio clip ε.
        scale_rewards: divide by the group's std (GRPO); ``False`` gives Dr. GRPO-style centring.

    Raises:
        textrl.TextRLError: ``group_size`` < 2, or as :class:`textrl.Algorithm`.
    """

    uses_value_head = False
    config_checks = {"group_size": textrl.integer(ge=2), "clip_range": textrl.number(gt=0)}

    def __init__(
        self,
        *,
        kl: KLConfig = KLConfig(estimator="k3"),
        group_size: int = 4,
        clip_range: float = 0.2,
        scale_rewards: bool = True,
        **loop,
    ):
        super().__init__(kl=kl, **loop)
        self.group_size, self.clip_range, self.scale_rewards = group_size, clip_range, scale_rewards
        self.samples_per_prompt = group_size

    def prepare(self, batch) -> dict[str, torch.Tensor]:
        """``{"advantages"}``: ``(B,)`` group-relative advantages of the batch's scores."""
        return {"advantages": group_advantages(batch.scores, self.group_size, self.scale_rewards)}

    def loss(self, batch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:func:`grpo_loss` on a minibatch (one teacher-forced forward pass of the policy,
        :meth:`textrl.Algorithm.response_logprobs`)."""
        out = self.response_logprobs(batch)
        terms = grpo_loss(
            out.sampled,
            batch.logprobs,
            batch.ref_logprobs,
            prepared["advantages"],
            batch.response_mask,
            self.clip_range,
            self.kl_coef,
            out.untruncated,
            self.kl_estimator,
        )
        return {
            "loss/total": terms["loss"],
            "loss/policy": terms["policy"],
            "loss/kl": terms["kl"],
            "policy/clipfrac": terms["clipfrac"],
        }

    def batch_metrics(self, batch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``objective/rlhf_reward`` as score − β·(k1 KL per episode): GRPO's KL is in the loss, not
        the reward, so the logged return uses the plain k1 sum whatever ``algo.kl.estimator``."""
        kl = episode_kl(batch.untruncated_logprobs, batch.ref_logprobs, batch.response_mask)
        return {"objective/rlhf_reward": (batch.scores - self.kl_coef * kl).mean()}
