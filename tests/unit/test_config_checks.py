"""The startup checks (textrl.config.check_config): every numeric and choice setting of every
group, and the built-in plugins' parameters, give one line ``<key>: got <value>; expected <...>``
naming the key the user typed. In-process on composed configs (fast); a handful of the same
mistakes go through the real command in test_bad_inputs.py."""

from __future__ import annotations

import pytest

from conftest import compose_config
from textrl.config import Check, check_config, check_plugin_params, integer, number, one_of
from textrl.errors import TextRLError
from textrl.plugins import load_plugins

# (overrides, the key and the bad value as the error line shows them)
BAD = [
    (["seed=-1"], "seed: got -1"),
    (["stage=distill"], "stage: got 'distill'"),
    (["device=tpu"], "device: got 'tpu'"),
    (["policy.dtype=int8"], "policy.dtype: got 'int8'"),
    (["policy.dropout=1.0"], "policy.dropout: got 1.0"),
    (["policy.lora.r=-1"], "policy.lora.r: got -1"),
    (["policy.lora.alpha=0"], "policy.lora.alpha: got 0.0"),
    (["policy.lora.dropout=-0.1"], "policy.lora.dropout: got -0.1"),
    (["env.max_new_tokens=-1"], "env.max_new_tokens: got -1"),
    (["env.max_prompt_tokens=0"], "env.max_prompt_tokens: got 0"),
    (["env.prompt_truncation=right"], "env.prompt_truncation: got 'right'"),
    (["env.max_turns=0"], "env.max_turns: got 0"),
    (["env.max_episode_tokens=0"], "env.max_episode_tokens: got 0"),
    (["env.turn_reward=per_token"], "env.turn_reward: got 'per_token'"),
    (["interaction=calculator", "interaction.max_chars=0"], "interaction.max_chars: got 0"),
    (["interaction=dialogue", "interaction.field=other"], "interaction.field: got 'other'"),
    (["data.max_prompts=0"], "data.max_prompts: got 0"),
    (["data.prefix_tokens=-2"], "data.prefix_tokens: got -2"),
    (["data.prefix_tokens=[5,2]"], "data.prefix_tokens: got [5, 2]"),
    (["data.prompt_format=markdown"], "data.prompt_format: got 'markdown'"),
    (["data.eval_prompts=-1"], "data.eval_prompts: got -1"),
    (["rollout.batch_size=0"], "rollout.batch_size: got 0"),
    (["rollout.samples_per_prompt=0"], "rollout.samples_per_prompt: got 0"),
    (["rollout.temperature=0"], "rollout.temperature: got 0.0"),
    (["rollout.temperature=nan"], "rollout.temperature: got nan"),
    (["rollout.top_k=-1"], "rollout.top_k: got -1"),
    (["rollout.top_p=0"], "rollout.top_p: got 0.0"),
    (["rollout.top_p=1.5"], "rollout.top_p: got 1.5"),
    (["rollout.engine=fast"], "rollout.engine: got 'fast'"),
    (["trainer.updates=0"], "trainer.updates: got 0"),
    (["trainer.token_budget=0"], "trainer.token_budget: got 0"),
    (["trainer.sample_every=-1"], "trainer.sample_every: got -1"),
    (["trainer.samples_per_update=-1"], "trainer.samples_per_update: got -1"),
    (["trainer.threads=0"], "trainer.threads: got 0"),
    (["trainer.precision=fp8"], "trainer.precision: got 'fp8'"),
    (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every: got -1"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints: got 0"),
    (["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite: got 'ignore'"),
    (["trainer.sharding=zero3"], "trainer.sharding: got 'zero3'"),
    (["trainer.rollout_gather=all"], "trainer.rollout_gather: got 'all'"),
    (["logger.name=tensorboard"], "logger.name: got 'tensorboard'"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode: got 'sometimes'"),
    (["logger.table_every=0"], "logger.table_every: got 0"),
    (["sft.epochs=0"], "sft.epochs: got 0.0"),
    (["sft.lr=-0.00001"], "sft.lr: got -1e-05"),
    (["sft.batch_size=0"], "sft.batch_size: got 0"),
    (["sft.max_length=0"], "sft.max_length: got 0"),
    (["sft.eval_fraction=1.0"], "sft.eval_fraction: got 1.0"),
    (["sft.warmup_ratio=2"], "sft.warmup_ratio: got 2.0"),
    (["sft.prompt_format=none"], "sft.prompt_format: got 'none'"),
    (["rm.objective=regression"], "rm.objective: got 'regression'"),
    (["rm.epochs=-1"], "rm.epochs: got -1.0"),
    (["rm.lr=0"], "rm.lr: got 0.0"),
    (["rm.batch_size=0"], "rm.batch_size: got 0"),
    (["rm.max_length=1"], "rm.max_length: got 1"),
    (["rm.head_tokens=0"], "rm.head_tokens: got 0"),
    (["rm.max_eval_examples=0"], "rm.max_eval_examples: got 0"),
    (["eval.num_prompts=0"], "eval.num_prompts: got 0"),
    (["eval.samples=0"], "eval.samples: got 0"),
    # algorithms: the shared keys (CHECKS) and each one's own (config_checks)
    (["algo.lr=0"], "algo.lr: got 0.0"),
    (["algo.epochs=0"], "algo.epochs: got 0"),
    (["algo.minibatch_size=0"], "algo.minibatch_size: got 0"),
    (["algo.max_grad_norm=0"], "algo.max_grad_norm: got 0.0"),
    (["algo.kl.init=-0.1"], "algo.kl.init: got -0.1"),
    (["algo.kl.target=0"], "algo.kl.target: got 0.0"),
    (["algo.kl.horizon=0"], "algo.kl.horizon: got 0.0"),
    (["algo.kl.estimator=k4"], "algo.kl.estimator: got 'k4'"),
    (["algo.micro_batch_size=0"], "algo.micro_batch_size: got 0"),
    (["algo.gamma=1.5"], "algo.gamma: got 1.5"),
    (["algo.lam=-0.1"], "algo.lam: got -0.1"),
    (["algo.clip_range=0"], "algo.clip_range: got 0.0"),
    (["algo.clip_range_value=-1"], "algo.clip_range_value: got -1.0"),
    (["algo.vf_coef=-1"], "algo.vf_coef: got -1.0"),
    (["algo.value_init=random"], "algo.value_init: got 'random'"),
    (["algo=ppo_ptx", "algo.ptx_coef=-1"], "algo.ptx_coef: got -1.0"),
    (["algo=ppo_ptx", "algo.ptx_batch_size=0"], "algo.ptx_batch_size: got 0"),
    (["algo=ppo_ptx", "algo.gamma=2"], "algo.gamma: got 2.0"),
    (["algo=reinforce", "algo.baseline=median"], "algo.baseline: got 'median'"),
    (["algo=reinforce", "algo.baseline_decay=1.0"], "algo.baseline_decay: got 1.0"),
    (["algo=reinforce", "algo.lr=-1"], "algo.lr: got -1.0"),
    (["algo=grpo", "algo.group_size=1"], "algo.group_size: got 1"),
    (["algo=grpo", "algo.clip_range=0"], "algo.clip_range: got 0.0"),
    (["algo=grpo", "algo.kl.target=0"], "algo.kl.target: got 0.0"),
    # reward models
    (["reward.backend=telepathy"], "reward.backend: got 'telepathy'"),
    (["reward.batch_size=0"], "reward.batch_size: got 0"),
    (["reward.max_length=0"], "reward.max_length: got 0"),
    (["reward.device=tpu"], "reward.device: got 'tpu'"),
    (["reward=learned", "reward.batch_size=0"], "reward.batch_size: got 0"),
    (
        ["reward=composite", "reward.components={a: {name: sentiment, weight: 1.0, backend: x}}"],
        "reward.components.a.backend: got 'x'",
    ),
    (
        ["reward=composite", "reward.components={a: {name: sentiment, weight: heavy}}"],
        "reward.components.a.weight: got 'heavy'",
    ),
    (
        ["reward=composite", "reward.components={a: {name: learned, model: m, batch_size: 0}}"],
        "reward.components.a.batch_size: got 0",
    ),
]


BAD += [
    (["algo.weight_decay=-0.1"], "algo.weight_decay: got -0.1"),
    (["rm.eval_fraction=-0.5"], "rm.eval_fraction: got -0.5"),
    (["rm.max_examples=0"], "rm.max_examples: got 0"),
    (["rm.prompt_format=html"], "rm.prompt_format: got 'html'"),
    (["rm.warmup_ratio=-1"], "rm.warmup_ratio: got -1.0"),
    (["sft.dropout=1"], "sft.dropout: got 1.0"),
    (["sft.max_examples=-5"], "sft.max_examples: got -5"),
    (["sft.weight_decay=-1"], "sft.weight_decay: got -1.0"),
]


@pytest.fixture(scope="module")
def registry():
    return load_plugins()


_BASES = {}


def configure(overrides: list[str], registry):
    """The composed config for ``overrides``: group choices (``algo=grpo``) composed once with
    Hydra, then the ``key=value`` settings merged in as a structured config types them (composing
    each case from scratch would cost seconds per case)."""
    from omegaconf import OmegaConf

    choices = tuple(o for o in overrides if "." not in o.split("=", 1)[0])
    if choices not in _BASES:
        _BASES[choices] = compose_config(list(choices), registry)
    settings = [o for o in overrides if o not in choices]
    return OmegaConf.merge(_BASES[choices], OmegaConf.from_dotlist(settings))


@pytest.mark.parametrize("overrides, shown", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_setting_is_one_line_naming_the_key(registry, overrides, shown):
    cfg = configure(overrides, registry)
    with pytest.raises(TextRLError) as error:
        check_config(cfg, registry)
    message = str(error.value)
    assert message.startswith(shown + "; expected "), message
    assert "\n" not in message


def test_the_command_line_parses_values_as_the_cases_assume(registry):
    """Hydra's own parsing of a few cases (``nan``, ``0``) gives what the merged cases check."""
    with pytest.raises(TextRLError, match="^rollout.temperature: got nan; expected a number > 0$"):
        check_config(compose_config(["rollout.temperature=nan"], registry), registry)
    with pytest.raises(TextRLError, match="^algo.group_size: got 1; expected an integer >= 2$"):
        check_config(compose_config(["algo=grpo", "algo.group_size=1"], registry), registry)


def test_every_checked_group_key_has_a_bad_case():
    """Each key of the central table is exercised above (so a check that never fires is caught)."""
    from textrl.config import CHECKS

    tried = {shown.split(":")[0] for _, shown in BAD}
    assert set(CHECKS) - tried == set(), sorted(set(CHECKS) - tried)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=tinystories_sentiment"],
        ["rollout.top_p=1", "rollout.top_k=0", "rollout.temperature=0.1"],
        ["algo.gamma=0", "algo.lam=1", "algo.max_grad_norm=null", "algo.clip_range_value=null"],
        ["data.prefix_tokens=null"],
        ["data.prefix_tokens=[2,8]"],
        ["algo=grpo", "algo.group_size=2"],
        ["device=cuda:1", "seed=4294967295", "policy.dropout=null"],
    ],
)
def test_good_settings_pass(registry, overrides):
    check_config(configure(overrides, registry), registry)


def test_check_vocabulary_by_hand():
    assert number(gt=0).expected == "a number > 0"
    assert number(ge=0, le=1).expected == "a number in [0, 1]"
    assert number(gt=0, le=1).expected == "a number in (0, 1]"
    assert integer(ge=1, optional=True).expected == "a positive integer or null"
    assert integer(ge=2).expected == "an integer >= 2"
    assert one_of("a", "b").expected == "one of ['a', 'b']"
    for bad in (True, "1", float("inf"), float("nan"), None):
        assert not number(ge=0).accepts(bad), bad
    assert not integer(ge=0).accepts(1.0) and integer(ge=0).accepts(0)
    with pytest.raises(TextRLError, match=r"^x\.y: got 3; expected a number < 3$"):
        number(lt=3)("x.y", 3)


def test_a_plugin_lists_checks_for_its_own_parameters():
    """A third-party factory's ``config_checks`` (textrl's public check helpers) run for its keys."""
    import textrl

    class Scorer:
        config_checks = {
            "scale": textrl.number(gt=0),
            "mode": textrl.one_of("fast", "exact"),
            "nested.depth": textrl.integer(ge=1),
        }

    check_plugin_params("reward", {"scale": 2.0, "mode": "fast", "nested": {"depth": 3}}, Scorer)
    with pytest.raises(TextRLError, match="reward.mode: got 'slow'; expected one of"):
        check_plugin_params("reward", {"scale": 2.0, "mode": "slow"}, Scorer)
    with pytest.raises(TextRLError, match="reward.nested.depth: got 0"):
        check_plugin_params("reward", {"nested": {"depth": 0}}, Scorer)
    assert isinstance(Scorer.config_checks["scale"], Check)
