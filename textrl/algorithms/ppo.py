"""PPO for RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

One :meth:`PPO.update` on a rollout batch:
1. shape the env's per-token rewards with the per-token KL penalty to π_ref (β from the KL controller);
2. GAE(γ, λ) advantages and returns over the action tokens from the rollout's values; whiten the
   advantages;
3. ``epochs`` passes of shuffled minibatches: teacher-forced forward of the policy, clipped
   surrogate + ``vf_coef`` × clipped value loss − ``ent_coef`` × entropy, gradient clipping;
4. update β with the batch's KL (adaptive controller only).
"""

from __future__ import annotations

import torch

from textrl.algorithms.advantages import gae, masked_mean, masked_whiten
from textrl.algorithms.base import Algorithm, SetupContext
from textrl.algorithms.kl import kl_shaped_rewards
from textrl.algorithms.losses import explained_variance, ppo_policy_loss, value_loss
from textrl.config import number, one_of
from textrl.config.choices import VALUE_INITS
from textrl.errors import TextRLError
from textrl.policies.sampling import entropy_from_logits, warp_logits
from textrl.rollout.buffer import RolloutBatch


class PPO(Algorithm):
    """Proximal policy optimisation with a KL-penalised reward, a value head and GAE.

    Args (keyword-only; plus the loop's ``lr``, ``kl``, ``minibatch_size``, ``micro_batch_size``,
    ``max_grad_norm``, ``weight_decay``: see :class:`~textrl.Algorithm`):
        epochs: passes over each rollout batch (PPO's own default: 2, as PPO reuses a batch for
            several clipped steps; TRL takes 4): every step after the first meets a ratio
            π/π_old ≠ 1 that the clip acts on.
        gamma: discount γ.
        lam: GAE λ.
        clip_range: policy ratio clip ε.
        clip_range_value: value clip ε_v (``None`` = unclipped).
        vf_coef: value-loss weight.
        ent_coef: entropy-bonus weight.
        whiten_advantages: normalise advantages over the batch.
        value_init: ``zeros`` (value head starts at 0) or ``reward_model``: copy the (normalised)
            score head of a ``reward=learned`` model into the value head (InstructGPT initialises
            the value function from the RM; here the head, since the trunk is the policy's).

    Minibatch shuffling draws from a generator seeded from torch's global seed (``seed``).

    Settings are range-checked at startup (the loop's by the schema,
    :class:`~textrl.config.schema.LoopConfig`; the rest by :attr:`config_checks`).

    Raises:
        TextRLError: a minibatch size that does not divide the batch; :class:`~textrl.errors.NonFiniteError` for a NaN/inf advantage,
            loss or gradient norm (raised before the optimizer step that would use it).
    """

    config_checks = {
        "gamma": number(ge=0, le=1),
        "lam": number(ge=0, le=1),
        "clip_range": number(gt=0),
        "clip_range_value": number(gt=0, optional=True),
        "vf_coef": number(ge=0),
        "ent_coef": number(ge=0),
        "value_init": one_of(*VALUE_INITS),
    }

    def __init__(
        self,
        *,
        epochs: int = 2,
        gamma: float = 1.0,
        lam: float = 0.95,
        clip_range: float = 0.2,
        clip_range_value: float | None = 0.2,
        vf_coef: float = 0.1,
        ent_coef: float = 0.0,
        whiten_advantages: bool = True,
        value_init: str = "zeros",
        **loop,
    ):
        super().__init__(epochs=epochs, **loop)
        self.gamma, self.lam = gamma, lam
        self.clip_range, self.clip_range_value = clip_range, clip_range_value
        self.vf_coef, self.ent_coef = vf_coef, ent_coef
        self.whiten_advantages, self.value_init = whiten_advantages, value_init

    def setup(self, policy, reference, context: SetupContext | None = None) -> None:
        """With ``value_init=reward_model`` copy ``context.reward_model.score_head()`` into the
        value head, then build the optimizer over the policy (LM + value head) as
        :meth:`Algorithm.setup`.

        Raises:
            TextRLError: ``value_init=reward_model`` without a learned reward model of the
                policy's hidden size.
        """
        context = context or SetupContext()
        if self.value_init == "reward_model":
            head = getattr(context.reward_model, "score_head", None)
            if head is None:
                raise TextRLError(
                    "algo.value_init=reward_model needs reward=learned; got a reward model without a score head"
                )
            weight, bias = head()
            target = policy.value_head.summary
            if weight.shape != target.weight.shape:
                raise TextRLError(
                    f"algo.value_init=reward_model: reward model hidden size {weight.shape[1]} != "
                    f"policy hidden size {target.weight.shape[1]}; expected an RM initialised "
                    f"from the policy (InstructGPT)"
                )
            with torch.no_grad():
                target.weight.copy_(weight)
                target.bias.copy_(bias)
        super().setup(policy, reference, context)

    def prepare(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """KL-shaped rewards → GAE over the action tokens: ``{"advantages", "returns"}``, each
        ``(B, T)`` (advantages whitened over the batch with ``whiten_advantages``). The rewards are
        the env's per-token rewards (``batch.rewards``: one per turn in a multi-turn episode, the
        score on the last action of a single-turn one); the penalty (``algo.kl.estimator``)
        compares the untruncated ``untruncated_logprobs`` with ``ref_logprobs``."""
        mask = batch.action_mask
        rewards, _ = kl_shaped_rewards(
            batch.rewards, batch.untruncated_logprobs, batch.ref_logprobs, mask, self.kl_coef, self.kl_estimator
        )
        advantages, returns = gae(rewards, batch.values, mask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return {"advantages": advantages, "returns": returns}

    def loss(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """PPO loss terms on a minibatch (one teacher-forced forward pass of the policy):
        clipped surrogate + ``vf_coef`` × clipped value loss − ``ent_coef`` × entropy, each a
        mean over the minibatch's response tokens."""
        mask = batch.action_mask
        out = self.response_logprobs(batch)
        logits, values = out.logits, out.values
        pg = ppo_policy_loss(out.sampled, batch.logprobs, prepared["advantages"], mask, self.clip_range)
        vf = value_loss(values, batch.values, prepared["returns"], mask, self.clip_range_value)
        entropy = masked_mean(
            entropy_from_logits(warp_logits(logits.detach() if self.ent_coef == 0 else logits, batch.sampling)), mask
        )
        total = pg.loss + self.vf_coef * vf.loss - self.ent_coef * entropy
        return {
            "loss/total": total,
            "loss/policy": pg.loss,
            "loss/value": vf.loss,
            "policy/clipfrac": pg.clipfrac,
            "policy/approxkl": pg.approxkl,
            "policy/entropy": entropy.detach(),
            "val/clipfrac": vf.clipfrac,
        }

    def batch_metrics(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The rollout's entropy estimate and the critic's fit to the GAE returns."""
        mask = batch.action_mask
        return {
            "objective/entropy": -torch.where(mask.bool(), batch.logprobs, 0.0).sum(1).mean(),
            "val/explained_variance": explained_variance(batch.values, prepared["returns"], mask),
            "val/mean": masked_mean(batch.values, mask),
        }
