"""PPO-ptx: γ_ptx = 0 is exactly PPO; γ_ptx > 0 adds the pretraining loss; the CLI run works."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from textrl.algorithms import PPO, PPOPtx, SetupContext
from textrl.envs import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies import SamplingConfig
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward


@pytest.fixture
def ptx_file(tmp_path):
    path = tmp_path / "pretrain.txt"
    path.write_text("the dog ran in the park\na girl saw the cat\nthe movie was very good and fun\n")
    return str(path)


def rollout(tokenizer, policy):
    env = TokenGenVectorEnv(
        tokenizer,
        ["the dog", "a girl saw"],
        length_reward,
        num_envs=4,
        max_new_tokens=5,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    return RolloutCollector(env, policy, copy.deepcopy(policy.lm), SamplingConfig(), seed=0).collect()


def test_zero_ptx_coef_is_exactly_ppo(tokenizer, policy, ptx_file):
    batch = rollout(tokenizer, policy)
    a, b = copy.deepcopy(policy), copy.deepcopy(policy)
    ppo = PPO(lr=1e-2, epochs=2, minibatch_size=2)
    ptx = PPOPtx(ptx_coef=0.0, ptx_data=ptx_file, ptx_batch_size=2, lr=1e-2, epochs=2, minibatch_size=2)
    ppo.setup(a, None)
    ptx.setup(b, None, SetupContext(tokenizer=tokenizer))
    m1, m2 = ppo.update(batch), ptx.update(batch)
    changed = any(not torch.equal(p, q) for p, q in zip(a.parameters(), policy.parameters()))
    assert changed  # PPO did move the weights
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert m2["loss/ptx"] > 0 and math.isfinite(m2["loss/ptx"]) and "loss/ptx" not in m1


def test_positive_ptx_coef_changes_the_update(tokenizer, policy, ptx_file):
    batch = rollout(tokenizer, policy)
    a, b = copy.deepcopy(policy), copy.deepcopy(policy)
    plain = PPO(lr=1e-2, epochs=1, minibatch_size=4)
    plain.setup(a, None)
    plain.update(batch)
    mixed = PPOPtx(ptx_coef=5.0, ptx_data=ptx_file, ptx_batch_size=3, lr=1e-2, epochs=1, minibatch_size=4)
    mixed.setup(b, None, SetupContext(tokenizer=tokenizer))
    metrics = mixed.update(batch)
    assert any(not torch.equal(p, q) for p, q in zip(a.lm.parameters(), b.lm.parameters()))
    assert metrics["loss/total"] == pytest.approx(
        metrics["loss/policy"] + 0.1 * metrics["loss/value"] + 5.0 * metrics["loss/ptx"], rel=1e-5
    )


def test_ptx_needs_data_and_a_non_negative_coef(ptx_file):
    with pytest.raises(TextRLError, match="algo.ptx_data: not set"):
        PPOPtx()
    from textrl.config import check_plugin_params

    with pytest.raises(TextRLError, match="algo.ptx_coef: got -1; expected γ_ptx >= 0"):
        check_plugin_params("algo", {"ptx_coef": -1, "ptx_data": ptx_file}, PPOPtx)
    with pytest.raises(TextRLError, match="algo.gamma: got 1.5"):  # PPO's own checks apply too
        check_plugin_params("algo", {"ptx_coef": 0.5, "gamma": 1.5}, PPOPtx)
