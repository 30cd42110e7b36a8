"""Rollouts through the vector env with the KV cache: logprobs, values, determinism."""

from __future__ import annotations

import pytest
import torch

from textrl.envs import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies import KVCacheDecoder, SamplingConfig, frozen_reference
from textrl.policies.scoring import response_logits
from textrl.policies.sampling import token_logprobs
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward, make_policy

# prompts of 2, 4 and 9 tokens (with BOS): left padding differs per row
PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park and"]


def collector(tokenizer, policy, sampling=SamplingConfig(), n=6, seed=0, T=12, reference=None):
    env = TokenGenVectorEnv(
        tokenizer, PROMPTS, length_reward, num_envs=n, max_new_tokens=T, max_prompt_tokens=12, autoreset_mode="disabled"
    )
    return RolloutCollector(env, policy, reference, sampling, seed=seed)


@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(temperature=0.7, top_k=8, top_p=0.9)])
def test_rollout_logprobs_and_values_equal_teacher_forced_recompute(tokenizer, policy, sampling):
    batch = collector(tokenizer, policy, sampling, reference=frozen_reference(policy)).collect(
        prompts=PROMPTS + PROMPTS[::-1]
    )
    lengths = batch.attention_mask[:, : -batch.response_length].sum(1)
    assert len(set(lengths.tolist())) == 3  # really left-padded prompts of different lengths
    with torch.no_grad():
        logits, values = policy.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
    mask = batch.action_mask
    recomputed = token_logprobs(logits[..., : batch.vocab_size], batch.response_ids, sampling) * mask
    assert (recomputed - batch.logprobs).abs().max() <= 1e-4
    assert (values * mask - batch.values).abs().max() <= 1e-4
    assert mask.sum() > 0 and batch.values.abs().max() > 0  # the check is not vacuous


def test_untruncated_logprobs_are_untruncated_and_match_the_reference_before_training(tokenizer, policy):
    sampling = SamplingConfig(temperature=0.7, top_k=5, top_p=0.8)
    batch = collector(tokenizer, policy, sampling, reference=frozen_reference(policy)).collect()
    mask = batch.action_mask
    with torch.no_grad():
        logits, _ = policy.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
    untruncated = token_logprobs(logits[..., : batch.vocab_size], batch.response_ids, sampling.untruncated()) * mask
    assert (untruncated - batch.untruncated_logprobs).abs().max() <= 1e-4
    assert (batch.ref_logprobs - batch.untruncated_logprobs).abs().max() <= 1e-4  # KL = 0 when policy = reference
    assert (
        batch.logprobs - batch.untruncated_logprobs
    ).abs().max() > 1e-2  # truncation really changed the sampled log-probs


def test_reference_logprobs_equal_policy_logprobs_before_training(tokenizer, policy):
    batch = collector(tokenizer, policy, reference=frozen_reference(policy)).collect()
    assert (batch.ref_logprobs - batch.logprobs).abs().max() <= 1e-4


def test_kv_cache_decoder_matches_full_forward_step_by_step(tokenizer, policy):
    enc = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    decoder = KVCacheDecoder(policy)
    logits, values = decoder.prefill(enc["input_ids"], enc["attention_mask"])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    active = torch.tensor([True, False, True])
    for step in range(4):
        with torch.no_grad():
            full = policy(ids, mask)
        last = mask.shape[1] - 1 - torch.flip(mask, [1]).argmax(1)  # each row's last real token
        rows = torch.arange(3) if step == 0 else active.nonzero().flatten()  # inactive rows' outputs are unused
        torch.testing.assert_close(logits[rows], full.logits[rows, last[rows]], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(values[rows, 0], full.values[rows, last[rows]], atol=1e-4, rtol=1e-4)
        tokens = torch.tensor([5 + step, 6, 7])
        ids = torch.cat([ids, tokens[:, None]], 1)
        mask = torch.cat([mask, active.long()[:, None]], 1)
        with torch.no_grad():
            logits, values = decoder.step(tokens, active)


def test_same_seed_gives_the_same_first_rollout(tokenizer):
    first = [collector(tokenizer, make_policy(tokenizer, seed=3), seed=11).collect() for _ in range(2)]
    assert torch.equal(first[0].input_ids, first[1].input_ids)
    assert first[0].prompts == first[1].prompts and first[0].responses == first[1].responses
    other = collector(tokenizer, make_policy(tokenizer, seed=3), seed=12).collect()
    assert not torch.equal(other.input_ids, first[0].input_ids)


def test_batch_layout_rewards_and_scores(tokenizer, policy):
    batch = collector(tokenizer, policy, T=6).collect()
    mask = batch.action_mask
    lengths = mask.sum(1).long()
    assert torch.all(mask.cumsum(1).max(1).values == lengths)  # real tokens form a prefix
    expected = torch.tensor([float(len(r.split())) for r in batch.responses])
    torch.testing.assert_close(batch.scores, expected)
    assert batch.input_ids.shape[1] == batch.attention_mask.shape[1]
    assert batch.select(torch.tensor([1, 0])).prompts == batch.prompts[1::-1]


def test_reference_logits_use_the_same_positions(tokenizer, policy):
    batch = collector(tokenizer, policy).collect()
    with torch.no_grad():
        logits = response_logits(policy.lm, batch.input_ids, batch.attention_mask, batch.response_length)
    lp = token_logprobs(logits, batch.response_ids) * batch.action_mask
    assert (lp - batch.logprobs).abs().max() <= 1e-4


def test_collector_needs_disabled_autoreset(tokenizer, policy):
    env = TokenGenVectorEnv(tokenizer, PROMPTS, length_reward, num_envs=2)
    with pytest.raises(TextRLError, match="DISABLED"):
        RolloutCollector(env, policy, None, SamplingConfig())
