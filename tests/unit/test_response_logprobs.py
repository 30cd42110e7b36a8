"""Algorithm.response_logprobs: the one forward pass every algorithm's loss makes goes through
the prepared model (``self.model``), and gives the rollout's own log-probs back on the batch it
was sampled from (sampled and untruncated distributions)."""

from __future__ import annotations

import copy

import torch

from textrl.algorithms import PPO, Reinforce
from textrl.envs import TokenGenVectorEnv
from textrl.policies import SamplingConfig
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward


def rollout(tokenizer, policy, sampling):
    env = TokenGenVectorEnv(
        tokenizer,
        ["the dog", "a girl saw", "the movie was", "it"],
        length_reward,
        num_envs=4,
        max_new_tokens=5,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    return RolloutCollector(env, policy, copy.deepcopy(policy.lm), sampling, seed=0).collect()


class Recorder(torch.nn.Module):
    """Stands in for the accelerator's wrapper: counts the calls that would all-reduce gradients."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_the_loss_forward_goes_through_the_prepared_model(tokenizer, policy):
    batch = rollout(tokenizer, policy, SamplingConfig())
    for algo in (PPO(lr=1e-3, minibatch_size=4), Reinforce(lr=1e-3, minibatch_size=4)):
        algo.setup(policy, None)
        algo.model = Recorder(policy)
        algo.update(batch)
        assert algo.model.calls > 0


def test_log_probs_match_the_rollout_under_truncation(tokenizer, policy):
    sampling = SamplingConfig(temperature=0.7, top_k=5)
    batch = rollout(tokenizer, policy, sampling)
    algo = PPO(lr=1e-3, minibatch_size=4)
    algo.setup(policy, None)
    out = algo.response_logprobs(batch)
    mask = batch.action_mask.bool()
    assert out.logits.shape[-1] == batch.vocab_size and out.values.shape == batch.values.shape
    torch.testing.assert_close(out.sampled[mask], batch.logprobs[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.untruncated[mask], batch.untruncated_logprobs[mask], atol=1e-5, rtol=1e-5)
    assert not torch.equal(out.sampled[mask], out.untruncated[mask])  # top-k renormalises the sampled one
    assert out.sampled.requires_grad and out.untruncated.requires_grad


def test_untruncated_is_the_sampled_tensor_when_nothing_truncates(tokenizer, policy):
    batch = rollout(tokenizer, policy, SamplingConfig(temperature=0.7))
    algo = Reinforce(lr=1e-3, minibatch_size=4)
    algo.setup(policy, None)
    out = algo.response_logprobs(batch)
    assert out.untruncated is out.sampled
