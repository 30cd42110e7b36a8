"""textrl.sharding on one process (a one-process gloo group of its own): which units the policy,
π_ref and a reward model are sharded into, that sharding changes no number (forward passes, a
training step, the rollout's gathered weights), the reward-model search, the byte counts and the
launch check. The multi-process behaviour (half the bytes per process, lockstep decoding,
checkpoints) is tested by tests/integration/test_sharded_runs.py."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from conftest import make_policy, make_tokenizer
from textrl.errors import TextRLError
from textrl.policies.logits import lm_forward
from textrl.policies.reference import frozen_reference
from textrl.sharding import (
    ShardedReference,
    Sharding,
    decoder_layers,
    is_sharded,
    local_bytes,
    reward_modules,
    stored_bytes,
)


@pytest.fixture
def sharding():
    with Sharding(torch.device("cpu")) as made:
        yield made
    assert not torch.distributed.is_initialized()


def batch(tokenizer, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, len(tokenizer), (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    return ids, mask


def tiny_classifier():
    """A random 2-layer Llama sequence classifier with one output (a learned reward model's shape)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_labels=1,
        pad_token_id=0,
    )
    return LlamaForSequenceClassification(config).eval()


def step(policy, optimizer, ids, mask):
    out = policy(ids, mask)
    loss = out.logits.logsumexp(-1).mean() + out.values.pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return out


def test_the_policy_is_sharded_into_layers_trunk_with_head_and_root(sharding):
    tokenizer = make_tokenizer()
    policy = make_policy(tokenizer)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    sharding.shard_trained(policy, optimizer)
    units = [m for m in policy.modules() if isinstance(m, FSDPModule)]
    assert policy in units and policy.lm.model in units and policy.lm.lm_head in units
    assert all(layer in units for layer in policy.lm.model.layers)
    assert len(units) == 2 + 3  # root, [trunk, head] (one unit, two modules), two layers
    assert all(isinstance(p, DTensor) for p in policy.parameters())
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in policy.parameters()}
    assert is_sharded(policy) and not is_sharded(make_policy(tokenizer)) and not is_sharded(None)


def test_a_sharded_policy_computes_and_trains_as_the_unsharded_one(sharding):
    tokenizer = make_tokenizer()
    plain = make_policy(tokenizer)
    policy = copy.deepcopy(plain)
    plain_optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    optimizer = sharding.shard_trained(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2))
    ids, mask = batch(tokenizer)
    for _ in range(2):  # the second step uses the first step's AdamW moments
        expected, got = step(plain, plain_optimizer, ids, mask), step(policy, optimizer, ids, mask)
        torch.testing.assert_close(got.logits, expected.logits)
        torch.testing.assert_close(got.values, expected.values)
    for name, p in plain.named_parameters():
        torch.testing.assert_close(dict(policy.named_parameters())[name].full_tensor(), p.detach())
    norm = Sharding.clip_grad_norm(policy.parameters(), 1.0)  # no gradients after zero_grad: norm 0
    assert float(norm) == 0.0


def test_the_rollout_gathers_the_whole_policy_and_frees_it_after(sharding):
    tokenizer = make_tokenizer()
    policy = make_policy(tokenizer)
    sharding.shard_trained(policy, torch.optim.AdamW(policy.parameters()))
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        before = policy(ids, mask).logits
        with sharding.rollout(policy) as gathered:
            assert not any(isinstance(p, DTensor) for p in policy.parameters())  # full weights, in place
            during = policy(ids, mask).logits
            assert not any(isinstance(p, DTensor) for p in policy.parameters())  # still gathered after a pass
    assert gathered.seconds >= 0
    assert all(isinstance(p, DTensor) for p in policy.parameters())
    torch.testing.assert_close(during, before)
    assert sharding.lockstep(policy) is None  # rollout_gather=whole: no lockstep


def test_the_reference_is_sharded_behind_a_root_that_runs_the_head_in_float32(sharding):
    tokenizer = make_tokenizer()
    policy = make_policy(tokenizer)
    reference = frozen_reference(policy)
    inputs = dict(zip(("input_ids", "attention_mask"), batch(tokenizer)))
    with torch.no_grad():
        expected = lm_forward(reference, inputs, 4).logits
        sharded = sharding.shard_reference(reference)
        got = sharded(logits_to_keep=4, **inputs).logits
    assert isinstance(sharded, ShardedReference) and isinstance(sharded, FSDPModule)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    assert sharding.shard_reference(None) is None
    holds_nothing = torch.nn.Module()  # LoRA's reference: the policy's own weights
    assert sharding.shard_reference(holds_nothing) is holds_nothing


def test_reward_models_are_found_in_nested_attributes_once():
    classifier = tiny_classifier()
    scorer = SimpleNamespace(model=classifier, tokenizer=make_tokenizer())
    composite = SimpleNamespace(components=[SimpleNamespace(scorer=scorer), {"again": scorer}], weights=[1.0, 2.0])
    assert reward_modules(composite) == [classifier]
    assert reward_modules(classifier) == [classifier]
    assert reward_modules(lambda prompts, responses: None) == []
    assert len(decoder_layers(classifier)) == 2


def test_a_reward_model_is_sharded_and_gathered_for_the_rollout(sharding):
    classifier = tiny_classifier()
    ids = torch.randint(4, 40, (2, 5))
    with torch.no_grad():
        expected = classifier(input_ids=ids).logits
    reward = SimpleNamespace(scorer=SimpleNamespace(model=classifier))
    assert sharding.shard_reward(reward) == [classifier]
    policy = make_policy(make_tokenizer())
    sharding.shard_trained(policy, torch.optim.AdamW(policy.parameters()))
    with torch.no_grad(), sharding.rollout(policy):
        assert not any(isinstance(p, DTensor) for p in classifier.parameters())
        torch.testing.assert_close(classifier(input_ids=ids).logits, expected)
    assert all(isinstance(p, DTensor) for p in classifier.parameters())


def test_stored_bytes_count_tied_weights_once_and_the_optimizer_state():
    policy = make_policy(make_tokenizer())
    policy.lm.lm_head.weight = policy.lm.model.embed_tokens.weight  # tie
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    count = sum(p.numel() for p in policy.parameters())  # parameters() lists a tied weight once
    assert stored_bytes({"policy": policy, "none": None}, optimizer) == {"policy": 4 * count, "none": 0, "optimizer": 0}
    policy(*batch(make_tokenizer())).values.sum().backward()
    optimizer.step()
    moments = 2 * 4 * count  # exp_avg and exp_avg_sq in float32, plus a float32 step per tensor
    assert stored_bytes({}, optimizer)["optimizer"] == moments + 4 * len(list(policy.parameters()))
    shared = torch.zeros(10)
    assert local_bytes([shared, shared, torch.zeros(3, dtype=torch.bfloat16)]) == 40 + 6


def test_an_accelerate_fsdp_launch_needs_trainer_sharding_fsdp(monkeypatch):
    from textrl.distributed import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(TextRLError, match="trainer.sharding: got 'none' under an accelerate FSDP launch"):
        make_accelerator(torch.device("cpu"))
    assert make_accelerator(torch.device("cpu"), "fsdp") is None  # one process: no accelerator
