"""The rollout batch: every tensor an RL update needs, for B finished episodes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from textrl.policies.sampling import SamplingConfig


@dataclass
class RolloutBatch:
    """B episodes laid out as [prompt, left-padded (P) | response, right-padded (T)].

    Attributes:
        input_ids: ``LongTensor[B, P+T]`` prompt and response token ids.
        attention_mask: ``LongTensor[B, P+T]`` 1 on real tokens.
        response_mask: ``FloatTensor[B, T]`` 1.0 on generated tokens (a prefix of each row).
        logprobs: ``FloatTensor[B, T]`` log-probabilities of the sampled tokens under the
            distribution they were sampled from (after temperature/top-k/top-p), 0 on padding.
        ref_logprobs: ``FloatTensor[B, T]`` log π_ref of the same tokens (temperature only).
        untruncated_logprobs: ``FloatTensor[B, T]`` log π of the same tokens under the policy's
            temperature-scaled, untruncated distribution, 0 on padding: with ``ref_logprobs``, the
            KL penalty's two sides (equal to ``logprobs`` when nothing truncates).
        values: ``FloatTensor[B, T]`` V(s_t) from the value head, 0 on padding.
        scores: ``FloatTensor[B]`` reward-model scores r_RM(x, y).
        prompts, responses: the texts, B of each.
        sampling: how the tokens were sampled (PPO recomputes logprobs the same way).
        vocab_size: size of the action space (logits beyond it are ignored).
        samples_per_prompt: k; rows ``[g*k, (g+1)*k)`` share one prompt (1 = no groups).
        reward_components: ``{name: FloatTensor[B]}``, a composite reward's component scores
            (empty for a single reward model).
        reward_details: B dicts explaining each score (an RBRM's rules), or ``None``.
        action_mask: ``FloatTensor[B, T]`` for multi-turn episodes (an env with an interaction):
            1.0 on the tokens the policy sampled, 0.0 on env tokens and padding; ``response_mask``
            is then the same tensor, so every log-prob, value, KL, entropy and loss covers actions
            only, and ``rewards`` holds each turn's reward on its last action token (the final one
            plus the reward model's score). ``None`` for single-turn episodes.
        rewards: ``FloatTensor[B, T]`` the env's per-token rewards of a multi-turn batch (each
            turn's reward on its last action token, the reward model's score added on the last);
            ``None`` for single-turn episodes, whose one reward is ``scores``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
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
    action_mask: torch.Tensor | None = None
    rewards: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of episodes B."""
        return self.input_ids.shape[0]

    @property
    def response_length(self) -> int:
        """Response width T (the longest response in the batch)."""
        return self.response_mask.shape[1]

    @property
    def response_ids(self) -> torch.Tensor:
        """``LongTensor[B, T]``, the generated tokens (padding where ``response_mask`` is 0)."""
        return self.input_ids[:, -self.response_length :]

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
            else:
                picked[f.name] = value
        return RolloutBatch(**picked)
