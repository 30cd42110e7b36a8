"""The plugin contract, tested as a third party would use it: entry points in the ``textrl`` group."""

from __future__ import annotations

import json
from pathlib import Path

import pluggy
import pytest
import torch

import textrl
from textrl.config import signature_schema
from textrl.errors import TextRLError
from textrl.plugins import collect_factories, describe, load_plugins

from conftest import compose_config, fast, install_plugin, one_line_error, read_jsonl

PLUGIN_SOURCE = '''
import json, os
import torch
import textrl


class Throwaway:
    """Scores every response with ``bonus`` and records the kwargs it was built with."""

    def __init__(self, bonus: float = 1.0, word: str = "dog", repeat: int = 2):
        with open(os.environ["THROWAWAY_KWARGS"], "w") as f:
            json.dump({"bonus": bonus, "word": word, "repeat": repeat}, f)
        self.bonus = bonus

    def __call__(self, prompts, responses):
        return torch.full((len(responses),), float(self.bonus))


@textrl.hookimpl
def textrl_reward_models():
    return {"throwaway": Throwaway}
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def plugin_env(site: Path, tmp_path: Path, **extra) -> dict:
    return {"PYTHONPATH": str(site), "THROWAWAY_KWARGS": str(tmp_path / "kwargs.json"), **extra}


def test_entry_point_plugin_is_selected_and_gets_its_kwargs(assets, site, tmp_path, cli):
    install_plugin(site, "throwaway_plugin", PLUGIN_SOURCE)
    out = tmp_path / "run"
    result = cli(
        *fast(out, "trainer.updates=1", "reward=throwaway", "reward.bonus=2.5", "reward.word=cat"),
        env=plugin_env(site, tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "kwargs.json").read_text()) == {"bonus": 2.5, "word": "cat", "repeat": 2}
    assert read_jsonl(out / "metrics.jsonl")[0]["objective/score"] == pytest.approx(2.5)


def test_unknown_plugin_parameter_lists_the_accepted_ones(site, tmp_path, cli):
    install_plugin(site, "throwaway_plugin", PLUGIN_SOURCE)
    result = cli("reward=throwaway", "reward.bonsu=1", f"hydra.run.dir={tmp_path}", env=plugin_env(site, tmp_path))
    line = one_line_error(result)
    assert "reward.bonsu" in line and "['name', 'bonus', 'word', 'repeat']" in line


def test_disabling_autoload_hides_entry_point_plugins(site, tmp_path, cli):
    install_plugin(site, "throwaway_plugin", PLUGIN_SOURCE)
    env = plugin_env(site, tmp_path, TEXTRL_DISABLE_PLUGIN_AUTOLOAD="1")
    result = cli("reward=throwaway", f"hydra.run.dir={tmp_path}", env=env)
    assert result.returncode != 0 and "throwaway" in result.stderr and "sentiment" in result.stderr
    listing = cli("plugins", env=env).stdout
    assert "throwaway" not in listing and "reward=sentiment" in listing


def test_broken_plugin_is_reported_and_does_not_break_other_runs(assets, site, tmp_path, cli):
    install_plugin(site, "broken_plugin", "raise ImportError('needs a GPU driver from 1998')\n")
    env = plugin_env(site, tmp_path)
    listing = cli("plugins", env=env)
    assert listing.returncode == 0
    assert "broken_plugin: FAILED to load (ImportError: needs a GPU driver from 1998)" in listing.stdout
    result = cli(*fast(tmp_path / "run", "trainer.updates=1"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_two_plugins_claiming_one_name_is_a_clear_error(site, tmp_path, cli):
    install_plugin(site, "first_plugin", PLUGIN_SOURCE)
    install_plugin(site, "second_plugin", PLUGIN_SOURCE)
    line = one_line_error(cli("plugins", env=plugin_env(site, tmp_path)))
    assert "'throwaway'" in line and "'first_plugin'" in line and "'second_plugin'" in line


def test_pm_register_makes_a_plugin_visible_in_process():
    registry = load_plugins(autoload=False)

    class Plugin:
        @textrl.hookimpl
        def textrl_reward_models(self):
            return {"constant": lambda value=1.0: lambda p, r: torch.full((len(r),), value)}

    registry.manager.register(Plugin(), name="in-process")
    collect_factories(registry)
    assert registry.rewards["constant"](value=3.0)(["x"], ["y"]).tolist() == [3.0]
    assert "in-process: reward=constant" in describe(registry)
    with pytest.raises(TextRLError, match="provided by two plugins"):
        registry.manager.register(type("Again", (Plugin,), {})(), name="again")
        collect_factories(registry)


def test_builtins_register_through_the_public_hooks():
    registry = load_plugins(autoload=False)
    assert registry.providers[("reward", "sentiment")] == "textrl.rewards"
    assert registry.providers[("algo", "ppo")] == "textrl.algorithms"
    assert isinstance(textrl.hookimpl, pluggy.HookimplMarker)
    hooks = {name for name in dir(registry.manager.hook) if name.startswith("textrl_")}
    assert registry.providers[("policy", "hf")] == "textrl.policies"
    assert hooks == {
        "textrl_policies",
        "textrl_reward_models",
        "textrl_algorithms",
        "textrl_interactions",
        "textrl_datasets",
        "textrl_on_stage_start",
        "textrl_on_metrics",
        "textrl_on_stage_end",
    }


def test_signature_schema_types_defaults_and_required():
    def factory(alpha: float, beta: int = 3, tag: str | None = None, weights: dict = {"a": 1.0}, *, flag: bool = True):
        return None

    schema = signature_schema("reward", "demo", factory)
    from omegaconf import OmegaConf

    node = OmegaConf.structured(schema)
    assert node.name == "demo" and node.beta == 3 and node.tag is None and node.flag is True
    assert OmegaConf.is_missing(node, "alpha") and OmegaConf.is_missing(node, "weights")
    assert OmegaConf.merge(node, {"weights": {"b": 2.0}}).weights == {"b": 2.0}  # replaced, not merged
    with pytest.raises(Exception):
        node.beta = "many"  # typed: int


def test_lifecycle_hooks_are_called_in_order(assets, tmp_path):
    from omegaconf import OmegaConf

    from textrl.run import run

    calls = []

    class Recorder:
        @textrl.hookimpl
        def textrl_on_stage_start(self, cfg, run_dir):
            calls.append(("start", run_dir))

        @textrl.hookimpl
        def textrl_on_metrics(self, update, metrics):
            calls.append(("update", update, "objective/kl" in metrics))

        @textrl.hookimpl
        def textrl_on_stage_end(self, summary):
            calls.append(("end", summary["updates"]))

    registry = load_plugins(autoload=False)
    registry.manager.register(Recorder())
    cfg = compose_config(
        [
            "experiment=tinystories_sentiment",
            "trainer.updates=2",
            "rollout.batch_size=4",
            "algo.minibatch_size=4",
            "env.max_new_tokens=4",
            "trainer.progress_bar=false",
            "trainer.save_policy=false",
            "logger=none",
        ],
        registry,
    )
    run(cfg, run_dir=str(tmp_path), registry=registry)
    assert calls == [("start", str(tmp_path)), ("update", 1, True), ("update", 2, True), ("end", 2)]
    assert OmegaConf.is_config(cfg)


def test_readme_plugin_example_works_as_written(assets, site, tmp_path, cli):
    """The plugins guide's reward plugin (``docs/guides/plugins.md``), installed through its entry point, trains."""
    import re

    from conftest import REPO

    readme = (REPO / "docs" / "guides" / "plugins.md").read_text()
    source = re.search(r"```python\n# my-reward/my_reward.py\n(.*?)```", readme, re.S).group(1)
    entry = re.search(r"\[project.entry-points.textrl\]\n(\w+) = \"(\w+)\"", readme)
    assert entry.groups() == ("shouting", "my_reward")
    install_plugin(site, "my_reward", source, entry_name="shouting")
    out = tmp_path / "run"
    result = cli(
        *fast(out, "trainer.updates=1", "reward=shouting", "reward.weight=0.5", "reward.cap=5"),
        env={"PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for sample in read_jsonl(out / "samples.jsonl"):
        assert sample["score"] == pytest.approx(0.5 * min(sample["response"].count("!"), 5))
    # its config_checks run at startup, as the guide shows
    bad = cli(*fast(tmp_path / "bad", "reward=shouting", "reward.cap=0"), env={"PYTHONPATH": str(site)})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "textrl: error: reward.cap: got 0; expected a positive integer" in bad.stderr.splitlines(), bad.stderr[
        -2000:
    ]


def install_guide_policy_plugin(site: Path) -> None:
    """Install the plugins guide's policy plugin (``docs/guides/plugins.md``) as written: module
    ``my_policy`` behind the entry point ``tiny_llama``."""
    import re

    from conftest import REPO

    guide = (REPO / "docs" / "guides" / "plugins.md").read_text()
    source = re.search(r"```python\n# my-policy/my_policy.py\n(.*?)```", guide, re.S).group(1)
    entry = re.search(r"# my-policy/pyproject.toml.*?\[project.entry-points.textrl\]\n(\w+) = \"(\w+)\"", guide, re.S)
    assert entry.groups() == ("tiny_llama", "my_policy")
    install_plugin(site, "my_policy", source, entry_name="tiny_llama")


def test_the_guides_policy_plugin_trains(assets, site, tmp_path, cli):
    """The guide's policy plugin (a random Llama from a config, not a checkpoint), installed through
    its entry point, is listed, selected with ``policy=<name>``, given its keys, and trains for 2
    updates: both metrics records written, the saved weights and value head moved from the
    loader's start."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    install_guide_policy_plugin(site)
    env = {"PYTHONPATH": str(site)}
    listing = cli("plugins", env=env).stdout
    assert "tiny_llama: policy=tiny_llama" in listing and "textrl.policies: policy=hf" in listing
    out = tmp_path / "run"
    tokenizer_dir = assets / "tinystories-656k"
    policy = ["policy=tiny_llama", f"policy.tokenizer={tokenizer_dir}", "policy.hidden=16", "trainer.updates=2"]
    result = cli(*fast(out, *policy), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["update"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    import my_policy

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    loader = my_policy.TinyLlama(str(tokenizer_dir), hidden=16)
    start = loader.load_policy(stage="rl", tokenizer=tokenizer, device=torch.device("cpu"))
    trained = load_file(out / "policy" / "model.safetensors")
    moved = [name for name, p in start.lm.state_dict().items() if name in trained and not torch.equal(p, trained[name])]
    assert len(moved) >= 10, moved  # the policy that trained is the one the loader built
    assert load_file(out / "policy" / "value_head.safetensors")["summary.weight"].abs().sum() > 0  # from zero


def test_a_policy_plugins_keys_are_checked_at_startup(site, tmp_path, cli):
    install_guide_policy_plugin(site)
    env = {"PYTHONPATH": str(site)}
    typo = one_line_error(cli("policy=tiny_llama", "policy.layerz=3", f"hydra.run.dir={tmp_path}", env=env))
    assert typo == (
        "textrl: error: policy.layerz: not a parameter of policy=tiny_llama; expected one of "
        "['name', 'tokenizer', 'hidden', 'layers', 'seed']"
    )
    bad = one_line_error(
        cli("policy=tiny_llama", "policy.tokenizer=x", "policy.layers=0", f"hydra.run.dir={tmp_path}", env=env)
    )
    assert bad == "textrl: error: policy.layers: got 0; expected a positive integer"
    preset = one_line_error(cli("policy=tinystories", "policy.lora.rr=8", f"hydra.run.dir={tmp_path}", env=env))
    assert preset.startswith("textrl: error: policy.lora.rr: no such key; expected one of ['alpha', 'dropout', 'r',")


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("instructgpt", "textrl: error: stage: got 'instructgpt' with policy=tiny_llama, which takes no policy.model"),
        ("eval", "textrl: error: eval.reference: got null; expected a causal LM for π_ref"),
    ],
)
def test_stages_needing_a_model_path_say_so_for_a_policy_without_one(site, tmp_path, cli, stage, message):
    install_guide_policy_plugin(site)
    args = ["policy=tiny_llama", "policy.tokenizer=x", f"stage={stage}", f"hydra.run.dir={tmp_path / 'run'}"]
    line = one_line_error(cli(*args, "logger=none", env={"PYTHONPATH": str(site)}))
    assert line.startswith(message), line
