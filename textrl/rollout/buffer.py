"""The rollout batch: every tensor an RL update needs, for B finished episodes, and what it says
about their turns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch

from textrl.policies.sampling import SamplingConfig

if TYPE_CHECKING:
    from textrl.rollout.branching import BranchEstimates


@dataclass
class RolloutBatch:
    """B episodes laid out as [prompt, left-padded (P) | every token after it, right-padded (T)].

    One contract for single-turn and multi-turn episodes: a single-turn episode's tokens after the
    prompt are all actions, a multi-turn episode's interleave the policy's turns with env tokens.

    Attributes:
        input_ids: ``LongTensor[B, P+T]`` prompt and episode token ids.
        attention_mask: ``LongTensor[B, P+T]`` 1 on real tokens (policy and env).
        action_mask: ``FloatTensor[B, T]`` 1.0 on the tokens the policy sampled (actions), 0.0 on env
            tokens and padding: every log-prob, value, KL, entropy and loss covers actions only.
        rewards: ``FloatTensor[B, T]`` float32, the env's per-token rewards: each reward on the
            column of the action whose step paid it (an interaction's turn reward and, with
            ``env.turn_reward=model``, the turn's score on the turn's last action; with ``final``
            the reward model's score on the episode's last action), 0.0 elsewhere. A row sums to
            the episode's ``scores``.
        logprobs: ``FloatTensor[B, T]`` log-probabilities of the sampled tokens under the
            distribution they were sampled from (after temperature/top-k/top-p), 0 off actions.
        ref_logprobs: ``FloatTensor[B, T]`` log π_ref of the same tokens (temperature only).
        untruncated_logprobs: ``FloatTensor[B, T]`` log π of the same tokens under the policy's
            temperature-scaled, untruncated distribution, 0 off actions: with ``ref_logprobs``, the
            KL penalty's two sides (equal to ``logprobs`` when nothing truncates).
        values: ``FloatTensor[B, T]`` V(s_t) from the value head, 0 off actions.
        scores: ``FloatTensor[B]`` each episode's score (reward model + interaction turn rewards).
        prompts, responses: the texts, B of each (a response: every token after the prompt decoded).
        sampling: how the tokens were sampled (PPO recomputes logprobs the same way).
        vocab_size: size of the action space (logits beyond it are ignored).
        samples_per_prompt: k; rows ``[g*k, (g+1)*k)`` share one prompt (1 = no groups).
        reward_components: ``{name: FloatTensor[B]}``, a composite reward's component scores
            (empty for a single reward model).
        reward_details: B dicts explaining each score (an RBRM's rules), or ``None``.
        branches: the Monte Carlo estimates of a branching rollout
            (:class:`~textrl.rollout.branching.BranchEstimates`: V̂ and the spread at chosen
            states), or ``None`` for a rollout without branches.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    rewards: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    untruncated_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    prompts: list[str]
    responses: list[str]
    sampling: SamplingConfig
    vocab_size: int
    samples_per_prompt: int = 1
    reward_components: dict[str, torch.Tensor] = field(default_factory=dict)
    reward_details: list[dict] | None = None
    branches: "BranchEstimates | None" = None

    @property
    def batch_size(self) -> int:
        """Number of episodes B."""
        return self.input_ids.shape[0]

    @property
    def response_length(self) -> int:
        """Width T of the tokens after the prompt (the longest episode in the batch)."""
        return self.action_mask.shape[1]

    @property
    def response_ids(self) -> torch.Tensor:
        """``LongTensor[B, T]``, the tokens after the prompt (actions where ``action_mask`` is 1)."""
        return self.input_ids[:, -self.response_length :]

    def turn_rewards(self) -> list[list[float]]:
        """Each episode's reward per policy turn: :attr:`rewards` at the last action of every run of
        actions, in order. With ``env.turn_reward=model`` these are the reward model's turn scores
        (plus any interaction turn reward); with ``final`` the last one also holds the episode's
        score (a single-turn episode: ``[score]``)."""
        actions = self.action_mask > 0
        following = torch.zeros_like(actions)
        following[:, :-1] = actions[:, 1:]
        ends = actions & ~following
        return [row[end].tolist() for row, end in zip(self.rewards.float().cpu(), ends.cpu())]

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        """The sub-batch of episodes ``index`` (``LongTensor[b]``); texts and components follow."""
        picked = {}
        rows = index.tolist()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in rows]
            elif isinstance(value, dict):
                picked[f.name] = {k: v[index] for k, v in value.items()}
            elif hasattr(value, "select"):
                picked[f.name] = value.select(index)
            else:
                picked[f.name] = value
        return RolloutBatch(**picked)


def turn_metrics(per_turn: list[list[float]], prefix: str = "turn/") -> dict[str, float]:
    """``{prefix}reward_mean`` (mean over every policy turn of every episode) and
    ``{prefix}reward_<k>`` (mean over the episodes' k-th turns, k = 1, 2, ...) of
    :meth:`RolloutBatch.turn_rewards`'s lists; ``{}`` when there are no turns."""
    flat = [r for turns in per_turn for r in turns]
    if not flat:
        return {}
    metrics = {f"{prefix}reward_mean": sum(flat) / len(flat)}
    for k in range(max(len(turns) for turns in per_turn)):
        kth = [turns[k] for turns in per_turn if len(turns) > k]
        metrics[f"{prefix}reward_{k + 1}"] = sum(kth) / len(kth)
    return metrics
