"""One source of truth per default: the structured-config dataclasses (textrl/config.py) and the
plugin factories' signatures hold every default; the YAML files in conf/ only pick options and set
what an option changes; the generated configuration reference (:mod:`textrl.reference`) states
what those three give, key by key.
"""

from __future__ import annotations

import inspect

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, compose_config
from textrl.config.plugin_options import INJECTED_KEYS
from textrl.config import CHECKS, TrainConfig, plugin_tables, signature_schema
from textrl.plugins import load_plugins
from textrl.reference import reference_entries, reference_markdown

CONF = REPO / "conf"


def leaves(node: dict, prefix: str = ""):
    """``(dotted key, value)`` for every non-mapping value of a nested dict."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture(scope="module")
def registry():
    return load_plugins()


@pytest.fixture(scope="module")
def entries(registry):
    return reference_entries(registry)


def option_yaml(group: str, option: str) -> dict:
    """The keys conf/<group>/<option>.yaml sets, as ``{dotted key under group: value}``."""
    spec = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
    return {f"{group}.{key}": value for key, value in leaves({k: v for k, v in spec.items() if k != "defaults"})}


def test_group_yaml_files_do_not_restate_schema_defaults(registry):
    """An option file (conf/<group>/<option>.yaml) or train.yaml that sets a key to the value the
    dataclass already gives it is a second source of truth for that default; so is a preset of a
    plugin factory (``policy=tinystories``: ``hf``) that restates the factory's signature default."""
    schema = OmegaConf.to_container(OmegaConf.structured(TrainConfig))
    files = [CONF / "train.yaml"] + sorted(p for p in CONF.glob("*/*.yaml") if p.parent.name != "experiment")
    restated = []
    presets = 0
    for path in files:
        spec = yaml.safe_load(path.read_text()) or {}
        group = [] if path.name == "train.yaml" else [path.parent.name]
        table = dict(plugin_tables(registry)).get(path.parent.name, {}) if group else {}
        picked = [entry for entry in spec.get("defaults", []) if isinstance(entry, str) and entry in table]
        if picked:  # a preset: its defaults are the factory's signature
            factory_schema = signature_schema(group[0], picked[0], table[picked[0]])
            schema = {**schema, group[0]: OmegaConf.to_container(OmegaConf.structured(factory_schema))}
            presets += 1
        for key, value in leaves({k: v for k, v in spec.items() if k != "defaults"}):
            if key == "name":
                continue  # an option's identity (logger=wandb sets logger.name: wandb)
            node = schema
            for part in group + key.split("."):
                node = node.get(part, "<no default>") if isinstance(node, dict) else "<no default>"
            if node == value:
                restated.append(f"{path.relative_to(REPO)}: {key}: {value!r}")
    assert not restated, restated
    assert presets >= 2  # policy=smollm2 and policy=tinystories pick hf


def test_reference_gives_every_schema_key_its_default(entries):
    """Each setting of the schema is in the main job's table, with the dataclass default unless an
    option file train.yaml picks sets it (then with that file's value)."""
    main = entries[""]
    picks = {}
    for entry in yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            picks.update({g: o for g, o in entry.items() if (CONF / g / f"{o}.yaml").is_file()})
    set_by_yaml = {k: v for group, option in picks.items() for k, v in option_yaml(group, option).items()}
    schema = dict(leaves(OmegaConf.to_container(OmegaConf.structured(TrainConfig))))
    assert len(schema) >= 60
    for key, default in schema.items():
        if key.split(".")[0] in ("policy", "reward", "algo"):
            continue  # plugin options: their defaults are the factories' (next test)
        assert key in main, f"{key} missing from the reference"
        assert main[key] == set_by_yaml.get(key, default), f"{key}: reference {main[key]!r}, code {default!r}"


def test_reference_gives_every_plugin_parameter_its_signature_default(entries, registry):
    """``policy=<name>``, ``reward=<name>`` and ``algo=<name>`` list each parameter of the factory
    with its default (a parameter without one is required); the main job's own picks are in its
    table."""
    main = entries[""]
    checked = 0
    for kind, table in (("policy", registry.policies), ("reward", registry.rewards), ("algo", registry.algorithms)):
        for name, factory in table.items():
            listed = entries.get(f"{kind}={name}", {k: v for k, v in main.items() if k.startswith(f"{kind}.")})
            assert listed[f"{kind}.name"] == name
            for param in inspect.signature(factory).parameters.values():
                if (
                    param.name == "self"
                    or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
                    or param.name in INJECTED_KEYS
                ):  # passed by textrl, not a config key
                    continue
                default = param.default
                if default is param.empty or isinstance(default, dict):
                    assert listed[f"{kind}.{param.name}"] == "???", (kind, name, param.name)
                elif hasattr(default, "__dataclass_fields__"):
                    nested = dict(
                        leaves(OmegaConf.to_container(OmegaConf.structured(default)), f"{kind}.{param.name}.")
                    )
                    assert all(listed[k] == v for k, v in nested.items()), (kind, name, param.name)
                else:
                    assert listed[f"{kind}.{param.name}"] == default, (kind, name, param.name)
                checked += 1
    assert checked >= 46
    assert entries["policy=hf"]["policy.model"] == "???" and entries["policy=hf"]["policy.lora.r"] == 0


def test_reference_lists_every_option_file_with_what_it_sets(entries):
    """Every YAML option in conf/<group>/ is in the reference, and each key it sets has its value."""
    seen = 0
    for path in sorted(p for p in CONF.glob("*/*.yaml") if p.parent.name != "experiment"):
        group, option = path.parent.name, path.stem
        listed = entries.get(f"{group}={option}", entries[""])
        assert listed.get(f"{group}.name", option) == option or f"{group}.name" not in option_yaml(group, option)
        for key, value in option_yaml(group, option).items():
            assert listed[key] == value, f"{path.relative_to(REPO)}: {key}: {value!r} vs {listed.get(key)!r}"
            seen += 1
    assert seen >= 5


def test_markdown_reference_has_one_row_per_key(entries):
    text = reference_markdown(entries)
    for option, table in entries.items():
        heading = f"### `{option}`" if option else "### main job"
        section = text.split(heading + "\n", 1)[1].split("\n### ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == list(table), option
    assert "| `reward.model` | (required) |" in text.split("### `reward=learned`", 1)[1]


def test_every_key_of_the_table_of_checks_exists():
    """A typo in textrl.config.CHECKS would check nothing; each key names a real setting of the
    main job or of one of the built-in algorithms/reward models."""
    from textrl.plugins import load_plugins

    registry = load_plugins()
    known = set()
    for option in [[]] + [[f"algo={a}"] for a in registry.algorithms] + [[f"reward={r}"] for r in registry.rewards]:
        known |= {key for key, _ in leaves(OmegaConf.to_container(compose_config(option, registry), resolve=False))}
    missing = [key for key in CHECKS if key not in known]
    assert not missing, missing


@pytest.mark.parametrize("factory_name", ["ppo", "ppo_ptx", "reinforce", "grpo"])
def test_algorithm_defaults_are_the_main_jobs(factory_name):
    """Every algorithm gets the main job's optimiser and KL settings from its own signature (they
    used to come from train.yaml's algo block, which applied to whichever algorithm was chosen).
    PPO (and PPO-ptx, a PPO) restates epochs: several clipped steps per rollout batch; REINFORCE
    and GRPO keep the loop's one step per batch."""
    cfg = compose_config([f"algo={factory_name}"])
    ppo = factory_name in ("ppo", "ppo_ptx")
    assert cfg.algo.lr == 8.0e-5
    assert (cfg.algo.epochs, cfg.algo.minibatch_size) == ((2, 16) if ppo else (1, 16))
    steps = cfg.algo.epochs * (cfg.rollout.batch_size // cfg.algo.minibatch_size)
    assert (steps >= 2) == ppo  # PPO's ratio and clip are at work from the second step on
    expected_kl = {
        "init": 0.05,
        "adaptive": True,
        "target": 6.0,
        "horizon": 5.0,
        "estimator": "k3" if factory_name == "grpo" else "k1",
    }
    assert OmegaConf.to_container(cfg.algo.kl) == expected_kl
