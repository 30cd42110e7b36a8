"""An installed (non-editable) wheel ships conf/ as textrl.conf and textrl/data (builtin prompts, RBRM
rubrics, the DeepSpeed launch config)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_finds_configs_and_data_without_the_source_tree(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheel_dir.glob("textrl-*.whl"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    probe = (
        "import textrl, hydra\n"
        "from textrl.config import register_configs, register_plugin_configs\n"
        "from textrl.plugins import load_plugins\n"
        "from textrl.envs import builtin_prompts\n"
        "register_configs(); register_plugin_configs(load_plugins(autoload=False))\n"
        "with hydra.initialize_config_module('textrl.conf', version_base='1.3'):\n"
        "    cfg = hydra.compose('train', overrides=['experiment=tinystories_sentiment'])\n"
        "from textrl.rewards.rbrm import builtin_rubrics\n"
        "from importlib import resources\n"
        "ds = resources.files('textrl.data').joinpath('accelerate', 'deepspeed_zero2.yaml').is_file()\n"
        "print(textrl.__file__); print(cfg.policy.model.endswith('tinystories-656k'), cfg.algo.name, len(builtin_prompts()),\n"
        "      builtin_rubrics(), ds)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    path, answer = result.stdout.strip().splitlines()[-2:]
    assert path.startswith(str(target))  # the wheel's copy, not the source tree
    assert answer == "True ppo 80 ['harmlessness'] True"  # rubric and accelerate config as package data


def read_constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_constraints_pin_every_installed_dependency_at_its_installed_version():
    """constraints.txt is what the README's commands and CI install with (``pip install -c``): it must
    name every distribution textrl, its dev extra, the plugins and the model packages pull in, at
    the version installed here; a dependency added to pyproject.toml without regenerating the file
    (``python .ci/constraints.py > constraints.txt``) fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_constraints", REPO / ".ci" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    installed = {k: v for k, v in module.closure().items() if k not in module.OWN | module.TOOLING}
    pins = read_constraints()
    missing = sorted(set(installed) - set(pins))
    assert not missing, f"not pinned in constraints.txt: {missing}"
    differ = {k: (pins[k], v) for k, v in installed.items() if pins[k] != v}
    assert not differ, f"constraints.txt pin vs installed: {differ}"


def test_readme_commands_and_ci_install_with_the_constraints():
    ci = (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci
    assert "transformers" in read_constraints() and "torch" in read_constraints()


def test_a_run_raises_no_deprecation_or_future_warning(assets, tmp_path):
    """textrl calls its libraries through their current APIs: a TinyStories update (rollout with a
    KV cache, PPO, saving the policy) raises no FutureWarning or DeprecationWarning (transformers
    5.24 warned on every ``past_key_values=`` call, which goes away in 5.40)."""
    import warnings

    from conftest import compose_config
    from textrl.plugins import load_plugins
    from textrl.run import run

    registry = load_plugins(autoload=False)
    cfg = compose_config(
        [
            "experiment=tinystories_sentiment",
            "trainer.updates=1",
            "rollout.batch_size=4",
            "algo.minibatch_size=4",
            "env.max_new_tokens=4",
            "logger=none",
            "trainer.progress_bar=false",
        ],
        registry,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg, run_dir=str(tmp_path), registry=registry)
    found = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, (DeprecationWarning, FutureWarning))
    ]
    assert not found, found
