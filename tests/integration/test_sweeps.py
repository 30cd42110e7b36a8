"""wandb sweep files: their command, metric and parameters are valid; one sampled config runs."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, compose_config, read_jsonl

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
COMMAND = ["${env}", "${interpreter}", "-m", "textrl", "${args_no_hyphens}"]


def sample(spec: dict, rng: random.Random):
    """One value of a wandb sweep parameter spec (value | values | uniform | log_uniform_values)."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    low, high = spec["min"], spec["max"]
    if spec.get("distribution") == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if spec.get("distribution") in ("uniform", None):
        return rng.uniform(low, high)
    raise AssertionError(f"unhandled distribution {spec}")


def expand_command(command: list[str], params: dict) -> list[str]:
    """What ``wandb agent`` runs: ${env} → /usr/bin/env, ${interpreter} → python, and
    ${args_no_hyphens} → one ``key=value`` per parameter."""
    out = []
    for part in command:
        if part == "${env}":
            out.append("/usr/bin/env")
        elif part == "${interpreter}":
            out.append(sys.executable)
        elif part == "${args_no_hyphens}":
            out += [f"{k}={v}" for k, v in params.items()]
        else:
            out.append(part)
    return out


def test_there_are_at_least_three_sweeps():
    assert len(SWEEPS) >= 3


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_is_valid(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["command"] == COMMAND
    assert sweep["metric"] == {"name": "objective/rlhf_reward", "goal": "maximize"}
    assert sweep["method"] in ("grid", "random", "bayes")
    params = sweep["parameters"]
    assert any(len(spec.get("values", [])) > 1 or "distribution" in spec for spec in params.values())
    # every value of every swept parameter is a valid override of the composed config
    fixed = {k: spec["value"] for k, spec in params.items() if "value" in spec}
    for key, spec in params.items():
        candidates = spec.get("values") or ([spec["min"], spec["max"]] if "min" in spec else [spec["value"]])
        for value in candidates:
            overrides = {**fixed, key: value}
            cfg = compose_config([f"{k}={v}" for k, v in overrides.items()])
            node = cfg
            if "." in key:
                for part in key.split("."):
                    node = node[part]
                assert node == value, (key, value)
            assert cfg.logger.name == "wandb"


def test_one_sampled_configuration_runs_as_the_agent_would(assets, tmp_path):
    sweep = yaml.safe_load((REPO / "sweeps" / "ppo_bayes_tinystories.yaml").read_text())
    rng = random.Random(0)
    params = {k: sample(spec, rng) for k, spec in sweep["parameters"].items()}
    params.update({"trainer.updates": 2, "rollout.batch_size": 8, "algo.minibatch_size": 8})  # CI-sized
    command = expand_command(sweep["command"], params)
    assert command[:4] == ["/usr/bin/env", sys.executable, "-m", "textrl"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(run_dirs) == 1
    records = read_jsonl(run_dirs[0] / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["objective/rlhf_reward"]) for r in records)
    wandb_files = list((run_dirs[0] / "wandb").glob("offline-run-*/*.wandb"))
    assert len(wandb_files) == 1
    assert wandb_files[0].read_bytes().count(b"objective/rlhf_reward") >= 2  # logged to wandb every update
    config = yaml.safe_load((run_dirs[0] / ".hydra" / "config.yaml").read_text())
    assert config["algo"]["lr"] == pytest.approx(params["algo.lr"])
