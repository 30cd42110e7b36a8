"""VinePPO (Kazemnejad et al., ICML 2025, arXiv 2410.01679): PPO whose advantages come from Monte
Carlo value estimates instead of a value head.

At chosen states of every episode (``algo.branch.at``: VinePPO's reasoning steps are the states
after a newline; or the start of every turn, or every ``algo.branch.every`` actions; the prompt
always) the rollout branches K continuations from the exact state (:mod:`textrl.rollout.branching`:
the token prefix and its KV cache copied, nothing re-encoded) and V̂(s) is the mean of their
returns, an unbiased estimate of the state's value under the current policy. Every action from one
chosen state s_j to the next gets ``A_j = Σ_t (r_t − β·KL_t) + V̂(s_{j+1}) − V̂(s_j)``
(:func:`~textrl.algorithms.advantages.segment_advantages`, γ = 1, V̂ = 0 after the episode);
advantages are whitened over the batch and the loss is PPO's clipped surrogate (minus
``ent_coef`` × entropy). No value head is trained. The continuations' tokens are sampled and
counted (``perf/sampled_tokens``), never trained on; V̂ estimates the env's return (score and turn
rewards) from the state, and the KL penalty enters through the segment's own per-token penalties.
"""

from __future__ import annotations

import torch

from textrl.algorithms.advantages import masked_mean, masked_whiten, segment_advantages
from textrl.algorithms.base import Algorithm
from textrl.algorithms.kl import kl_shaped_rewards
from textrl.algorithms.losses import ppo_policy_loss
from textrl.config import number
from textrl.config.schema import BranchConfig
from textrl.errors import TextRLError
from textrl.policies.sampling import entropy_from_logits, warp_logits
from textrl.rollout.buffer import RolloutBatch


class VinePPO(Algorithm):
    """VinePPO (see the module docstring).

    Args (keyword-only; plus the loop's, see :class:`~textrl.Algorithm`):
        epochs: passes over each rollout batch (2, as PPO).
        clip_range: policy ratio clip ε.
        ent_coef: entropy-bonus weight.
        whiten_advantages: normalise advantages over the batch.
        branch: where the rollout branches and how many continuations per state
            (:class:`~textrl.config.schema.BranchConfig`, or its dict).

    Raises:
        TextRLError: a batch collected without branches (a collector not given :attr:`branching`).
    """

    uses_value_head = False
    config_checks = {"clip_range": number(gt=0), "ent_coef": number(ge=0)}

    def __init__(
        self,
        *,
        epochs: int = 2,
        clip_range: float = 0.2,
        ent_coef: float = 0.0,
        whiten_advantages: bool = True,
        branch: BranchConfig | dict = BranchConfig(),
        **loop,
    ):
        super().__init__(epochs=epochs, **loop)
        self.clip_range, self.ent_coef, self.whiten_advantages = clip_range, ent_coef, whiten_advantages
        self.branching = BranchConfig(**branch) if isinstance(branch, dict) else branch

    def prepare(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """``{"advantages"}``: ``(B, T)`` segment advantages from the branches' V̂ (whitened)."""
        if batch.branches is None:
            raise TextRLError("algo=vineppo: got a batch without branches; expected a collector made with branching")
        mask = batch.action_mask
        rewards, _ = kl_shaped_rewards(
            batch.rewards, batch.untruncated_logprobs, batch.ref_logprobs, mask, self.kl_coef, self.kl_estimator
        )
        advantages = segment_advantages(rewards, batch.branches.mean, batch.branches.mask, mask)
        if self.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        return {"advantages": advantages}

    def loss(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The clipped surrogate − ``ent_coef`` × entropy (means over the minibatch's actions)."""
        mask = batch.action_mask
        out = self.response_logprobs(batch)
        pg = ppo_policy_loss(out.sampled, batch.logprobs, prepared["advantages"], mask, self.clip_range)
        logits = out.logits.detach() if self.ent_coef == 0 else out.logits
        entropy = masked_mean(entropy_from_logits(warp_logits(logits, batch.sampling)), mask)
        return {
            "loss/total": pg.loss - self.ent_coef * entropy,
            "loss/policy": pg.loss,
            "policy/clipfrac": pg.clipfrac,
            "policy/approxkl": pg.approxkl,
            "policy/entropy": entropy.detach(),
        }

    def batch_metrics(self, batch: RolloutBatch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """How many states were branched per episode and how far their estimates spread."""
        branches = batch.branches
        states = branches.mask.sum()
        return {
            "branch/states": states / batch.batch_size,
            "branch/value_std": (branches.std * branches.mask).sum() / states.clamp(min=1),
        }
