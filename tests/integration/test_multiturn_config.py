"""``interaction=<name>`` from the command line: a Hydra group fed by the ``textrl_interactions``
hook, options from the factory's signature, bad settings as one error line, the env built from it."""

from __future__ import annotations

import pytest

from textrl.config import check_config, check_plugin_overrides
from textrl.data_sources import DataSources
from textrl.errors import TextRLError
from textrl.interactions import Calculator
from textrl.plugins import load_plugins
from textrl.stages.build import build_interaction, make_collector, make_env

from conftest import compose_config, length_reward, one_line_error


@pytest.fixture(scope="module")
def registry():
    return load_plugins()


def test_no_interaction_by_default_and_the_env_is_single_turn(registry, tokenizer):
    cfg = compose_config([], registry)
    assert cfg.interaction is None and cfg.env.max_turns == 1 and cfg.env.max_episode_tokens is None
    assert build_interaction(cfg, registry, sources=DataSources(registry.datasets)) is None
    env = make_env(cfg, tokenizer, ["the dog"], length_reward, 2, "cpu")
    assert env.rules.interaction is None and not env.rules.appends_tokens
    assert env.width == cfg.env.max_prompt_tokens + cfg.env.max_new_tokens  # one turn: no room for env tokens


@pytest.mark.parametrize(
    "override, key",
    [("env.max_turns=3", "env.max_turns"), ("env.max_episode_tokens=64", "env.max_episode_tokens")]
    + [("env.turn_reward=model", "env.turn_reward")],
)
def test_multiturn_settings_without_an_interaction_are_one_error_line(registry, override, key):
    cfg = compose_config([override], registry)
    with pytest.raises(TextRLError, match=rf"^{key}: got .* without an interaction; expected .*interaction=<name>"):
        check_config(cfg, registry)


def test_an_episode_budget_beyond_the_models_context_is_one_error_line(registry, tokenizer, policy):
    from textrl.stages.build import check_context

    cfg = compose_config(["interaction=calculator", "env.max_turns=40", "env.max_new_tokens=40"], registry)
    interaction = build_interaction(cfg, registry, sources=DataSources(registry.datasets))
    env = make_env(cfg, tokenizer, ["the dog"], length_reward, 2, "cpu", interaction)
    context = policy.config.max_position_embeddings  # 128 for the test policy
    with pytest.raises(TextRLError, match=rf"^env.max_episode_tokens: got .* expected at most {context} in all"):
        check_context(env, policy)


def test_interaction_option_builds_a_multiturn_env(registry, tokenizer, policy):
    cfg = compose_config(
        [
            "interaction=calculator",
            "interaction.call_reward=0.5",
            "env.max_turns=3",
            "env.max_new_tokens=5",
            "env.max_prompt_tokens=8",
            "rollout.engine=auto",
        ],
        registry,
    )
    check_config(cfg, registry)
    interaction = build_interaction(cfg, registry, sources=DataSources(registry.datasets))
    assert isinstance(interaction, Calculator) and interaction.call_reward == 0.5
    env = make_env(cfg, tokenizer, ["the dog"], length_reward, 2, "cpu", interaction)
    assert env.rules.max_turns == 3 and env.rules.max_episode_tokens == 30 and env.width == 38
    assert make_collector(cfg, env, policy, None, seed=0).engine_name == "eager"  # auto is eager on the CPU


def test_unknown_interaction_parameter_lists_the_accepted_ones(registry):
    with pytest.raises(TextRLError, match=r"^interaction.foo: not a parameter of interaction=calculator; expected"):
        check_plugin_overrides(["interaction=calculator", "interaction.foo=1"], registry, {})


def test_bad_interaction_setting_is_one_error_line_at_startup(tmp_path, cli):
    out = cli("interaction=calculator", "interaction.max_chars=0", f"hydra.run.dir={tmp_path}")
    assert one_line_error(out) == "textrl: error: interaction.max_chars: got 0; expected a positive integer"


def test_rl_run_with_the_dialogue_interaction(assets, tmp_path, cli):
    """The whole rl stage on TinyStories-656K with multi-turn episodes: hh-rlhf conversations
    replayed, both reward parts logged, the score their sum."""
    import json

    out = tmp_path / "run"
    result = cli(
        "experiment=tinystories_sentiment",
        "interaction=dialogue",
        "interaction.max_conversations=16",
        "env.max_turns=2",
        "env.max_new_tokens=8",
        "env.max_prompt_tokens=48",
        "rollout.batch_size=8",
        "algo.minibatch_size=4",
        "trainer.updates=2",
        "trainer.progress_bar=false",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["objective/score"] == pytest.approx(row["reward/model"] + row["reward/interaction"], abs=1e-6)
    assert (out / "policy" / "value_head.safetensors").is_file()
