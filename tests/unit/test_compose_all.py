"""Every experiment and every option of every config group composes (Hydra's compose API, no
run) and passes the startup checks, so a broken YAML fails CI here. Experiments are globbed from
conf/experiment/ and options listed by Hydra's config loader, so a new file is covered by itself."""

from __future__ import annotations

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from conftest import REPO, compose_config
from textrl.config import check_config, register_configs, register_plugin_configs
from textrl.config.choices import STAGES
from textrl.plugins import load_plugins

GROUPS = ("policy", "env", "data", "reward", "algo", "logger", "trainer", "experiment", "interaction")
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def registry():
    return load_plugins()


def group_options(registry) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` as Hydra sees them (YAML files and the plugins' ConfigStore nodes)."""
    register_configs()
    register_plugin_configs(registry)
    GlobalHydra.instance().clear()
    with initialize_config_module("textrl.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = [g for g in loader.list_groups("") if g != "hydra"]
        return {g: loader.get_group_options(g) for g in groups}


def test_config_groups_are_the_real_ones(registry):
    """``textrl --help`` lists these groups: no YAML folder that is not a group (rubrics, accelerate)."""
    options = group_options(registry)
    assert sorted(options) == sorted(GROUPS)
    assert sorted(options["experiment"]) == EXPERIMENTS
    assert {"ppo", "ppo_ptx", "reinforce"} <= set(options["algo"])
    assert {"sentiment", "learned", "rbrm", "composite"} <= set(options["reward"])
    assert {"calculator", "dialogue"} <= set(options["interaction"])
    assert {"hf", "smollm2", "tinystories"} <= set(options["policy"])


def test_experiments_are_globbed():
    assert {"tinystories_sentiment", "instructgpt", "instructgpt_tiny", "imdb_classifier"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_passes_the_checks(registry, experiment):
    cfg = compose_config([f"experiment={experiment}"], registry)
    check_config(cfg, registry)
    assert cfg.stage in STAGES


def test_every_option_of_every_group_composes_and_passes_the_checks(registry):
    options = group_options(registry)
    composed = 0
    for group in GROUPS[:-1]:
        for option in options[group]:
            cfg = compose_config([f"{group}={option}"], registry)
            check_config(cfg, registry)
            tables = {"policy": registry.policies, "reward": registry.rewards, "algo": registry.algorithms}
            if group in tables:  # a preset picks a factory (policy=tinystories: hf; happy_words: regex)
                assert cfg[group].name in tables[group], (group, option)
            composed += 1
    assert composed >= 15
