"""Checkpoints and exact resume: a run killed with SIGKILL and resumed ends with one record per
update and the same metrics as an uninterrupted run; pruning; config mismatches; the non-finite
guard stops (or skips) without harming the last good checkpoint."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch

from conftest import fast, install_plugin, one_line_error, read_jsonl, textrl
from textrl.checkpoint import STATE_FILE, config_fingerprint, list_checkpoints, truncate_jsonl
from textrl.signals import TEST_SIGNAL_AT_UPDATE

UPDATES = 12


def run_args(out, *extra):
    return fast(
        out,
        "seed=3",
        f"trainer.updates={UPDATES}",
        "trainer.checkpoint_every=3",
        "trainer.threads=1",
        "logger=none",
        "trainer.save_policy=false",
        *extra,
    )


def comparable(records):
    """Metrics without wall-clock timings."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def test_sigkill_then_resume_equals_an_uninterrupted_run(assets, tmp_path):
    whole = tmp_path / "whole"
    assert textrl(*run_args(whole)).returncode == 0

    out = tmp_path / "killed"
    metrics = out / "metrics.jsonl"
    killed = textrl(*run_args(out), env={TEST_SIGNAL_AT_UPDATE: "5:KILL"})  # SIGKILL once update 5 is logged
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(metrics.read_text().splitlines()) == 5
    assert [Path(p).name for p in list_checkpoints(str(out))] == ["update_000003"]  # every 3 updates

    resumed = textrl(*run_args(out, "trainer.resume=auto"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = read_jsonl(metrics)
    assert [r["update"] for r in records] == list(range(1, UPDATES + 1))  # none missing, none repeated
    assert comparable(records) == comparable(read_jsonl(whole / "metrics.jsonl"))
    samples = read_jsonl(out / "samples.jsonl")
    assert [s["update"] for s in samples] == [s["update"] for s in read_jsonl(whole / "samples.jsonl")]
    assert json.loads((out / "summary.json").read_text())["last_score"] == pytest.approx(records[-1]["objective/score"])


def test_checkpoints_are_pruned_and_hold_the_training_state(assets, tmp_path):
    out = tmp_path / "run"
    result = textrl(
        *fast(
            out,
            "trainer.updates=5",
            "trainer.checkpoint_every=2",
            "trainer.keep_checkpoints=2",
            "logger=none",
            "trainer.save_policy=false",
        )
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = [Path(p).name for p in list_checkpoints(str(out))]
    assert names == ["update_000004", "update_000005"]  # every 2 updates and at the end, newest 2 kept
    state = torch.load(Path(list_checkpoints(str(out))[-1]) / STATE_FILE, weights_only=False)
    assert state["update"] == 5
    assert {"optimizer", "kl_controller", "generator"} <= set(state["algorithm"])
    assert {"generator", "env"} <= set(state["processes"][0]["collector"])
    assert {"rngs", "group_rng"} <= set(state["processes"][0]["collector"]["env"])  # the env draws the prompts
    assert {"python", "numpy", "torch"} <= set(state["processes"][0]["rng"])
    assert any(k.startswith("value_head") for k in state["policy"])
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_resume_refuses_a_checkpoint_of_another_config(assets, tmp_path):
    out = tmp_path / "run"
    first = textrl(
        *fast(out, "trainer.updates=2", "trainer.checkpoint_every=2", "logger=none", "trainer.save_policy=false")
    )
    assert first.returncode == 0, first.stderr[-2000:]
    before = (out / "metrics.jsonl").read_text()
    line = one_line_error(textrl(*fast(out, "trainer.updates=4", "trainer.resume=auto", "algo.lr=0.5")))
    assert "trainer.resume:" in line and "algo.lr=0.5 (checkpoint: 0.0003)" in line, line
    assert (out / "metrics.jsonl").read_text() == before  # nothing touched


def test_resume_path_without_checkpoint_is_one_line(tmp_path, assets):
    line = one_line_error(textrl(*fast(tmp_path / "run", f"trainer.resume={tmp_path / 'nothing'}")))
    assert f"trainer.resume: '{tmp_path / 'nothing'}' holds no checkpoint" in line


NAN_PLUGIN = '''
import os
import torch

from textrl.hookspecs import hookimpl


class NaNLater:
    """Length reward that turns NaN once more than `after` responses have been scored."""

    def __init__(self, after: int = 16):
        self.after, self.seen = after, 0

    def __call__(self, prompts, responses):
        self.seen += len(responses)
        if self.seen > self.after:
            return torch.full((len(responses),), float("nan"))
        return torch.tensor([float(len(r.split())) for r in responses])


@hookimpl
def textrl_reward_models():
    return {"nan_later": NaNLater}
'''


@pytest.fixture
def nan_plugin(tmp_path):
    (tmp_path / "site").mkdir()
    install_plugin(tmp_path / "site", "nan_plugin", NAN_PLUGIN)
    return {"PYTHONPATH": str(tmp_path / "site")}


def test_nan_reward_stops_naming_quantity_and_update_and_keeps_the_checkpoint(assets, tmp_path, nan_plugin):
    out = tmp_path / "run"
    result = textrl(
        *fast(
            out, "reward=nan_later", "reward.after=16", "trainer.updates=5", "trainer.checkpoint_every=1", "logger=none"
        ),
        env=nan_plugin,
    )
    line = one_line_error(result)
    assert "update 3: reward is not finite" in line and "nan" in line and "update_000002" in line, line
    assert [r["update"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    last = list_checkpoints(str(out))[-1]
    assert Path(last).name == "update_000002"
    assert torch.load(Path(last) / STATE_FILE, weights_only=False)["update"] == 2  # intact and readable
    assert not (out / "summary.json").exists()


def test_nan_reward_skipped_when_configured(assets, tmp_path, nan_plugin):
    out = tmp_path / "run"
    result = textrl(
        *fast(
            out, "reward=nan_later", "reward.after=16", "trainer.updates=4", "trainer.on_nonfinite=skip", "logger=none"
        ),
        env=nan_plugin,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "update 3: " in result.stdout + result.stderr and "skipped" in result.stdout + result.stderr
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    assert records[2] == {"update": 3, "skipped/nonfinite": 1.0} and records[3]["skipped/nonfinite"] == 1.0
    assert all(math.isfinite(r["objective/score"]) for r in records[:2])


def test_truncate_jsonl_drops_later_updates_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"update": 1}\n{"update": 2}\n{"update": 3}\n{"upda')
    assert truncate_jsonl(str(path), 2) == [{"update": 1}, {"update": 2}]
    assert path.read_text() == '{"update": 1}\n{"update": 2}\n'


def test_fingerprint_ignores_run_length_but_not_the_experiment():
    from conftest import compose_config

    base = config_fingerprint(compose_config(["experiment=tinystories_sentiment"]))
    longer = config_fingerprint(
        compose_config(
            ["experiment=tinystories_sentiment", "trainer.updates=999", "trainer.resume=auto", "logger=wandb"]
        )
    )
    other = config_fingerprint(compose_config(["experiment=tinystories_sentiment", "algo.lr=0.5"]))
    assert base == longer
    assert base != other and other["algo.lr"] == 0.5


def test_a_fresh_run_in_a_used_directory_drops_the_old_checkpoints(assets, tmp_path):
    out = tmp_path / "run"
    args = ("logger=none", "trainer.save_policy=false", "trainer.checkpoint_every=2")
    assert textrl(*fast(out, "trainer.updates=6", *args)).returncode == 0
    assert textrl(*fast(out, "trainer.updates=2", *args)).returncode == 0
    assert [Path(p).name for p in list_checkpoints(str(out))] == ["update_000002"]
    assert [r["update"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    "every, resume, due",
    [
        (0, None, []),  # the default: no optimizer checkpoint at all
        (0, "auto", [5]),  # a resumed run leaves one at the end, so it can be extended again
        (2, None, [2, 4, 5]),  # on schedule and at the end
        (5, None, [5]),
    ],
)
def test_checkpoints_are_written_only_when_asked_for(every, resume, due):
    from omegaconf import OmegaConf

    from textrl.stages.rl import checkpoint_due

    cfg = OmegaConf.create({"trainer": {"updates": 5, "checkpoint_every": every, "resume": resume}})
    assert [u for u in range(1, 6) if checkpoint_due(cfg, u)] == due
