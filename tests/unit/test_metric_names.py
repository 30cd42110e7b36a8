"""The one table of metric names (textrl.metrics.METRICS): what the algorithms, the console and
the contract use is in it, with a unit."""

from __future__ import annotations

import copy

import pytest

from textrl import EPISODE_METRICS
from textrl.algorithms import PPO, Reinforce
from textrl.envs import TokenGenVectorEnv
from textrl.loggers.console import HEADLINE
from textrl.metrics import METRICS, describe, metric
from textrl.policies import SamplingConfig
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward


def test_families_match_and_unknown_names_do_not():
    assert metric("reward/rules") is METRICS["reward/<label>"]
    assert metric("eval/reference/median_reward") is METRICS["eval/<model>/median_reward"]
    assert metric("reward/a/b") is None and metric("loss/kl") is None
    assert describe("episode/length").endswith(", tokens") and describe("plugin/thing") == "plugin/thing"


def test_the_contract_and_the_console_name_metrics_of_the_table():
    assert set(EPISODE_METRICS) <= set(METRICS)
    assert all(metric(name) is not None for name in HEADLINE)
    assert all(entry.unit and entry.stages and entry.meaning for entry in METRICS.values())


def test_every_metric_says_what_healthy_looks_like_and_what_to_do():
    """The glossary page is generated from these fields (docs/_hooks/metrics_glossary.py)."""
    lacking = [name for name, entry in METRICS.items() if not (entry.healthy and entry.when_off)]
    assert not lacking, lacking


@pytest.mark.parametrize("make", [lambda: PPO(lr=1e-3, minibatch_size=4), lambda: Reinforce(lr=1e-3, minibatch_size=4)])
def test_every_metric_an_update_reports_is_in_the_table(tokenizer, policy, make):
    env = TokenGenVectorEnv(
        tokenizer,
        ["the dog", "a girl saw"],
        length_reward,
        num_envs=4,
        max_new_tokens=4,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    batch = RolloutCollector(env, policy, copy.deepcopy(policy.lm), SamplingConfig(), seed=0).collect()
    algo = make()
    algo.setup(policy, None)
    unknown = [name for name in algo.update(batch) if metric(name) is None]
    assert not unknown, unknown
