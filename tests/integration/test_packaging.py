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
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheel_dir.glob("textrl-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
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
