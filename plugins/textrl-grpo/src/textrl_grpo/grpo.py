"""Group-relative policy optimisation (Shao et al. 2024, DeepSeekMath §4.1), outcome supervision,
with turn-level credit.

For a group of G episodes of one prompt with returns G_1..G_G (``Σ_t r_t``, the env's rewards; a
single-turn episode's is its score): ``A_{i,t} = (G_{i,t} − mean(G)) / (std(G) + eps)`` at every
action t of episode i, ``G_{i,t} = G_i − R_{<t}`` its reward-to-go (the rewards paid before t
removed, :func:`textrl.rewards_before`; ``G_i`` itself for a single-turn episode). The baseline is
the group's mean episode return, which no action of episode i affects. The loss per token is the
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
from textrl import BranchConfig, KLConfig, episode_kl, kl_penalty, masked_mean, ppo_policy_loss, rewards_before
from textrl import state_values


def group_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Per-action advantages: each action's reward-to-go minus its group's mean episode return
    (divided by the group's std of returns if ``scale`` and that std is not 0).

    Args:
        rewards: ``(B, T)`` the env's per-token rewards; rows ``[g*G, (g+1)*G)`` share a prompt.
        mask: ``(B, T)`` 1.0 on action tokens.
        group_size: G ≥ 2, dividing B.

    Returns:
        ``(B, T)`` float32 advantages.

    Raises:
        textrl.TextRLError: G < 2 or G does not divide B.
    """
    returns = rewards.float().sum(1)
    if group_size < 2 or returns.numel() % group_size:
        raise textrl.TextRLError(
            f"algo.group_size: got {group_size}; expected an integer >= 2 dividing rollout.batch_size={returns.numel()}"
        )
    groups = returns.view(-1, group_size)
    mean = groups.mean(1, keepdim=True).expand_as(groups).reshape(-1, 1)
    to_go = returns[:, None] - rewards_before(rewards.float(), mask)
    centred = to_go - mean
    if scale:
        std = groups.std(1, keepdim=True).expand_as(groups).reshape(-1, 1)
        # a group whose returns are all equal is not scaled: its reward-to-go corrections would be
        # divided by eps (a single-turn group's advantages are then 0 either way)
        centred = centred / torch.where(std > 0, std + eps, torch.ones_like(std))
    return centred


def state_group_advantages(rewards: torch.Tensor, mask: torch.Tensor, branches, scale: bool = True, eps: float = 1e-6):
    """Per-action advantages with same-state groups: each action's reward-to-go minus the mean return
    of the K continuations branched from the state its segment started from (divided by their std
    if ``scale`` and it is not 0). ``branches``: the batch's :class:`textrl.BranchEstimates`.

    Returns:
        ``(B, T)`` float32 advantages, 0 off the actions.
    """
    to_go = rewards.float().sum(1, keepdim=True) - rewards_before(rewards.float(), mask)
    mean = state_values(branches.mean, branches.mask, mask)
    centred = (to_go - mean) * mask
    if scale:
        std = state_values(branches.std, branches.mask, mask)
        centred = centred / torch.where(std > 0, std + eps, torch.ones_like(std))
    return centred


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
    """GRPO loss terms on token tensors ``(B, T)``, advantages included.

    Args:
        logprobs: ``(B, T)`` current log π under the sampling distribution (with grad), for the ratio.
        old_logprobs: ``(B, T)`` the rollout's log π_old, same distribution.
        ref_logprobs: ``(B, T)`` log π_ref (temperature-scaled, untruncated).
        advantages: ``(B, T)`` group-relative advantages.
        mask: ``(B, T)`` 1.0 on real tokens.
        clip_range: ε > 0.
        beta: KL coefficient β.
        untruncated_logprobs: ``(B, T)`` current log π, temperature-scaled and untruncated (with grad), for
            the KL term; ``None`` uses ``logprobs`` (right when nothing truncates).
        estimator: ``k1`` | ``k2`` | ``k3`` (:func:`textrl.kl_penalty`).

    Returns a dict with ``loss`` (scalar to minimise), ``policy`` (clipped surrogate),
    ``kl`` (mean per-token KL estimate), ``clipfrac``.
    """
    pg = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range)
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
        group_by: ``prompt`` (a group is G episodes of one prompt) or ``state`` (same-state groups:
            a group is the ``branch.k`` continuations the rollout branches from one exact state,
            at ``branch.at``; with ``turns`` a group per turn; :func:`state_group_advantages`).
        branch: where the rollout branches and K, for ``group_by=state`` (:class:`textrl.BranchConfig`).

    Raises:
        textrl.TextRLError: ``group_size`` < 2, or as :class:`textrl.Algorithm`.
    """

    uses_value_head = False
    config_checks = {
        "group_size": textrl.integer(ge=2),
        "clip_range": textrl.number(gt=0),
        "group_by": textrl.one_of("prompt", "state"),
    }

    def __init__(
        self,
        *,
        kl: KLConfig = KLConfig(estimator="k3"),
        group_size: int = 4,
        clip_range: float = 0.2,
        scale_rewards: bool = True,
        group_by: str = "prompt",
        branch: BranchConfig | dict = BranchConfig(at="turns"),
        **loop,
    ):
        super().__init__(kl=kl, **loop)
        self.group_size, self.clip_range, self.scale_rewards = group_size, clip_range, scale_rewards
        self.group_by = group_by
        if group_by == "state":
            self.branching = BranchConfig(**branch) if isinstance(branch, dict) else branch
        else:
            self.samples_per_prompt = group_size

    def prepare(self, batch) -> dict[str, torch.Tensor]:
        """``{"advantages"}``: ``(B, T)`` group-relative advantages of the batch's rewards (same-state
        groups with ``group_by=state``)."""
        if self.group_by == "state":
            if batch.branches is None:
                raise textrl.TextRLError("algo.group_by: got 'state' for a batch without branches; expected branching")
            return {
                "advantages": state_group_advantages(
                    batch.rewards, batch.action_mask, batch.branches, self.scale_rewards
                )
            }
        return {"advantages": group_advantages(batch.rewards, batch.action_mask, self.group_size, self.scale_rewards)}

    def loss(self, batch, prepared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:func:`grpo_loss` on a minibatch (one teacher-forced forward pass of the policy,
        :meth:`textrl.Algorithm.response_logprobs`)."""
        out = self.response_logprobs(batch)
        terms = grpo_loss(
            out.sampled,
            batch.logprobs,
            batch.ref_logprobs,
            prepared["advantages"],
            batch.action_mask,
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
        kl = episode_kl(batch.untruncated_logprobs, batch.ref_logprobs, batch.action_mask)
        return {"objective/rlhf_reward": (batch.scores - self.kl_coef * kl).mean()}
