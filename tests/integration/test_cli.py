"""The textrl command end to end on the real TinyStories assets, and its one-line errors."""

from __future__ import annotations

import json
import math

import pytest

from textrl.errors import TextRLError

from conftest import fast, read_jsonl, textrl

REQUIRED_KEYS = (
    "update",
    "objective/rlhf_reward",
    "objective/score",
    "objective/kl",
    "kl/beta",
    "loss/policy",
    "loss/value",
    "policy/clipfrac",
    "perf/tokens_per_s",
)


def test_tinystories_experiment_three_updates(assets, tmp_path):
    out = tmp_path / "run"
    result = textrl(*fast(out, "trainer.updates=3"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2, 3]
    for record in records:
        for key in REQUIRED_KEYS:
            assert key in record and math.isfinite(record[key]), key
    summary = json.loads((out / "summary.json").read_text())
    assert {"first_score", "last_score", "wall_time_s", "kl_last_mean3"} <= set(summary)
    assert summary["kl_last_mean3"] == pytest.approx(records[-1]["objective/kl"])  # k = 1 of 3 updates
    samples = read_jsonl(out / "samples.jsonl")
    assert samples and {"prompt", "response", "score"} <= set(samples[0])
    assert (out / "policy" / "config.json").is_file() and (out / "policy" / "value_head.safetensors").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()
    # what the user asked for and nothing more: no optimizer checkpoint without trainer.checkpoint_every
    assert not (out / "checkpoints").exists()
    assert summary["policy_dir"] == str(out / "policy") and summary["report_png"] == str(out / "report.png")
    # the closing block: score first → last update, KL, where the report and the policy are
    block = result.stdout[result.stdout.index("textrl: done: 3 updates × 8 episodes") :].splitlines()
    assert block[1].split()[:4] == [
        "score",
        f"{records[0]['objective/score']:.3f}",
        "→",
        f"{records[-1]['objective/score']:.3f}",
    ]
    assert block[2].split()[:2] == ["KL", f"{records[-1]['objective/kl']:.2f}"] and "(target 6)" in block[2]
    assert block[3] == f"  report  {out / 'report.png'}" and block[4] == f"  policy  {out / 'policy'}"


def test_saved_policy_loads_back_as_policy_model(assets, tmp_path, cli):
    first = tmp_path / "a"
    assert cli(*fast(first, "trainer.updates=1")).returncode == 0
    second = tmp_path / "b"
    result = cli(*fast(second, "trainer.updates=1", f"policy.model={first / 'policy'}"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_jsonl(second / "metrics.jsonl")) == 1


def test_wandb_logger_runs_offline(assets, tmp_path):
    out = tmp_path / "run"
    result = textrl(*fast(out, "trainer.updates=2", "logger=wandb", "logger.table_every=1"))
    assert result.returncode == 0, result.stderr[-2000:]
    [wandb_file] = (out / "wandb").glob("offline-run-*/*.wandb")  # one run
    assert wandb_file.read_bytes().count(b"objective/score") >= 2  # logged to wandb at each update


def test_too_long_prompt_is_cut_from_the_left_by_default(assets, tmp_path):
    """The warning reaches the user's terminal (a subprocess: the process's own log handlers)."""
    prompts = tmp_path / "long.txt"
    prompts.write_text("Once upon a time there was a little girl named Lily who loved to play outside\n")
    result = textrl(
        *fast(
            tmp_path / "run",
            f"data.prompts={prompts}",
            "data.prefix_tokens=null",
            "env.max_prompt_tokens=4",
            "trainer.updates=1",
        )
    )
    assert result.returncode == 0 and "cut from the left" in result.stdout + result.stderr


def test_plugins_command_lists_builtins(cli):
    result = cli("plugins")
    assert result.returncode == 0
    assert "reward=sentiment" in result.stdout and "algo=ppo" in result.stdout


def test_multirun_runs_every_combination_in_its_own_directory(assets, tmp_path, cli):
    pytest.importorskip("textrl_grpo", reason="pip install -e plugins/textrl-grpo")
    result = cli(
        "-m",
        "algo=ppo,grpo",
        "seed=1,2",
        "experiment=tinystories_sentiment",
        "trainer.updates=1",
        "rollout.batch_size=4",
        "algo.minibatch_size=4",
        "env.max_new_tokens=4",
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.save_policy=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        algo = "grpo" if "algo=grpo" in overrides else "ppo"
        seed = "1" if "seed=1" in overrides else "2"
        seen.add((algo, seed))
        assert len(read_jsonl(job / "metrics.jsonl")) == 1
    assert seen == {("ppo", "1"), ("ppo", "2"), ("grpo", "1"), ("grpo", "2")}


def test_precheck_accepts_hydra_interpolations_and_multirun_mode():
    """The one-line config pre-check must not reject valid Hydra command lines it cannot resolve."""
    from textrl.cli import check_composition
    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(load_plugins())
    check_composition(["hydra.run.dir=outputs/${hydra:job.name}", "+extra_key=1"])
    check_composition(["hydra.mode=MULTIRUN", "seed=1,2"])
    # Hydra's way to drop a group (single-turn then: the experiment's multi-turn budgets go too)
    check_composition(["experiment=calculator_tiny", "~interaction", "env.max_turns=1", "env.max_episode_tokens=null"])


def test_a_group_set_to_null_is_one_line_naming_it():
    from textrl.cli import check_composition
    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(load_plugins())
    with pytest.raises(
        TextRLError, match=r"^interaction: got null; expected an option name \(drop the group with ~interaction\)$"
    ):
        check_composition(["experiment=calculator_tiny", "interaction=null"])


def test_bf16_autocast_trains_on_cpu(assets, tmp_path, cli):
    out = tmp_path / "run"
    result = cli(*fast(out, "device=cpu", "trainer.precision=bf16", "trainer.updates=2", "logger=none"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 2 and all(
        math.isfinite(r["loss/policy"]) and math.isfinite(r["objective/kl"]) for r in records
    )
