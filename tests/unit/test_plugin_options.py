"""Plugin options from factory signatures (textrl.config.plugin_options): an algorithm inherits the
loop's hyperparameters from textrl.Algorithm through ``**loop``, restates one to change its
default, and the reward-model table reaches the composite without being a config key."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

import textrl
from textrl.config import LoopConfig, build_plugin, factory_parameters, signature_schema
from textrl.errors import TextRLError
from textrl.plugins import load_plugins

LOOP_KEYS = [f.name for f in dataclasses.fields(LoopConfig)]


class Plain(textrl.Algorithm):
    """Declares only its own parameter."""

    def __init__(self, *, spice: float = 0.5, **loop):
        super().__init__(**loop)
        self.spice = spice

    def prepare(self, batch):
        return {}

    def loss(self, batch, prepared):
        return {}


class Faster(Plain):
    """Restates one loop parameter with another default."""

    def __init__(self, *, lr: float = 1e-3, **rest):
        super().__init__(lr=lr, **rest)


def test_a_subclass_has_the_loops_parameters_and_its_own():
    assert factory_parameters(Plain).names == LOOP_KEYS + ["spice"]
    node = OmegaConf.structured(signature_schema("algo", "plain", Plain))
    assert node.lr == LoopConfig().lr and node.kl.estimator == "k1" and node.spice == 0.5
    assert OmegaConf.structured(signature_schema("algo", "faster", Faster)).lr == 1e-3
    assert not factory_parameters(Plain).takes_any


def test_the_loop_parameters_are_keyword_only_and_checked():
    with pytest.raises(TypeError):
        Plain(1e-3)  # the loop's parameters are keyword-only
    with pytest.raises(TextRLError, match="^algo.minibatch_size: got 0; expected a positive integer$"):
        Plain(minibatch_size=0)
    with pytest.raises(TextRLError, match="^algo.spoon: not a parameter of algo=plain"):
        build_plugin("algo", {"name": "plain", "spoon": 1}, {"plain": Plain})
    assert build_plugin("algo", {"name": "faster", "spice": 2.0}, {"faster": Faster}).lr == 1e-3


def test_every_builtin_algorithm_inherits_the_loop():
    registry = load_plugins()
    for name in ("ppo", "ppo_ptx", "reinforce", "grpo"):
        assert set(LOOP_KEYS) <= set(factory_parameters(registry.algorithms[name]).names), name


def test_the_reward_table_reaches_the_composite_but_is_no_config_key():
    registry = load_plugins(autoload=False)
    composite = registry.rewards["composite"]
    assert "rewards" not in factory_parameters(composite).names
    assert "rewards" not in OmegaConf.structured(signature_schema("reward", "composite", composite))
    seen = {}

    def component(**kwargs):
        seen.update(kwargs)
        return lambda prompts, responses: None

    table = {**registry.rewards, "probe": component}
    reward = build_plugin("reward", {"name": "composite", "components": {"p": {"name": "probe", "weight": 2.0}}}, table)
    assert reward.components["p"][0] == 2.0 and seen == {}
