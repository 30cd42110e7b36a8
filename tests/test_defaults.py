"""One source of truth per default: the structured-config dataclasses (textrl/config.py) and the
plugin factories' signatures hold every default; the YAML files in conf/ only pick options and set
what an option changes; the README's configuration table states the defaults the code has.

The README table writes a default as the override that sets it (`` `env.max_new_tokens=20` ``) in
the row of its group; a row headed `` `reward=learned` `` describes that option, so its keys are
compared with the config composed with ``reward=learned``.
"""

from __future__ import annotations

import re

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, compose_config
from textrl.config import CHECKS, TrainConfig

CONF = REPO / "conf"
DEFAULT_IN_TABLE = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+)=([^`'{]+)`")


def leaves(node: dict, prefix: str = ""):
    """``(dotted key, value)`` for every non-mapping value of a nested dict."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def readme_table() -> list[tuple[str, str, str]]:
    """``(first cell, default cell, meaning cell)`` of each row of the README configuration table."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [tuple(cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:4]) for row in rows]


def same(text: str, value) -> bool:
    """Whether the README's ``text`` states ``value`` (a YAML scalar as typed on the command line)."""
    if value is None:
        return text == "null"
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, (int, float)):
        return float(text) == value
    return text == str(value)


def option_context(first_cell: str) -> list[str]:
    """The overrides a table row describes: ``reward=learned`` for the row `` `reward=learned` ``."""
    match = re.fullmatch(r"`(\w+)=(\w+)`", first_cell)
    return [f"{match.group(1)}={match.group(2)}"] if match else []


def test_group_yaml_files_do_not_restate_schema_defaults():
    """An option file (conf/<group>/<option>.yaml) or train.yaml that sets a key to the value the
    dataclass already gives it is a second source of truth for that default."""
    schema = OmegaConf.to_container(OmegaConf.structured(TrainConfig))
    files = [CONF / "train.yaml"] + sorted(p for p in CONF.glob("*/*.yaml") if p.parent.name != "experiment")
    restated = []
    for path in files:
        spec = yaml.safe_load(path.read_text()) or {}
        group = [] if path.name == "train.yaml" else [path.parent.name]
        for key, value in leaves({k: v for k, v in spec.items() if k != "defaults"}):
            if key == "name":
                continue  # an option's identity (logger=wandb sets logger.name: wandb)
            node = schema
            for part in group + key.split("."):
                node = node.get(part, "<no default>") if isinstance(node, dict) else "<no default>"
            if node == value:
                restated.append(f"{path.relative_to(REPO)}: {key}: {value!r}")
    assert not restated, restated


def test_readme_table_states_the_defaults_the_code_has():
    table = readme_table()
    assert len(table) >= 15
    checked = 0
    for first, default, meaning in table:
        cfg = OmegaConf.to_container(compose_config(option_context(first)), resolve=False)
        values = dict(leaves(cfg))
        for key, text in DEFAULT_IN_TABLE.findall(meaning):
            assert key in values, f"README row {first}: {key} is not a config key"
            assert same(text.strip(), values[key]), f"README row {first}: {key}={text} but the default is {values[key]!r}"
            checked += 1
        top = re.fullmatch(r"`(\w+)`", first)
        if top and default:  # seed, device, stage
            assert same(default, values[top.group(1)]), f"README: {top.group(1)} default {default} vs {values[top.group(1)]!r}"
            checked += 1
    assert checked >= 80  # the table states most defaults; a dropped backtick would silently skip one


def test_readme_group_defaults_are_the_options_train_yaml_picks():
    picks = {}
    for entry in yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            picks.update(entry)
    rows = {first: default for first, default, _ in readme_table()}
    for group in ("policy", "data", "env", "reward", "algo", "logger", "trainer"):
        assert rows[f"`{group}=`"] == picks[group], group


def test_every_key_of_the_table_of_checks_exists():
    """A typo in textrl.config.CHECKS would check nothing; each key names a real setting of the
    main job or of one of the built-in algorithms/reward models."""
    from textrl.plugins import load_plugins

    registry = load_plugins()
    known = set()
    for option in ([[]] + [[f"algo={a}"] for a in registry.algorithms] + [[f"reward={r}"] for r in registry.rewards]):
        known |= {key for key, _ in leaves(OmegaConf.to_container(compose_config(option, registry), resolve=False))}
    missing = [key for key in CHECKS if key not in known]
    assert not missing, missing


@pytest.mark.parametrize("factory_name", ["ppo", "ppo_ptx", "reinforce", "grpo"])
def test_algorithm_defaults_are_the_main_jobs(factory_name):
    """Every algorithm gets the main job's optimiser and KL settings from its own signature (they
    used to come from train.yaml's algo block, which applied to whichever algorithm was chosen)."""
    cfg = compose_config([f"algo={factory_name}"])
    assert cfg.algo.lr == 8.0e-5 and cfg.algo.epochs == 1 and cfg.algo.minibatch_size == 16
    expected_kl = {"init": 0.05, "adaptive": True, "target": 6.0, "horizon": 5.0,
                   "estimator": "k3" if factory_name == "grpo" else "k1"}
    assert OmegaConf.to_container(cfg.algo.kl) == expected_kl
