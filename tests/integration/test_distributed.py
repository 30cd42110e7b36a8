"""Two processes under ``accelerate launch`` (gloo on CPU): each collects half of the episodes,
gradients are all-reduced so both hold the same policy, metrics are averaged, only the main
process writes files."""

from __future__ import annotations

import json
import math

import pytest

from conftest import accelerate_launch, fast, read_jsonl


@pytest.mark.parametrize(
    "algo", [["algo=ppo", "algo.micro_batch_size=2"], ["algo=reinforce"]], ids=["ppo-micro-batches", "reinforce"]
)
def test_two_processes_keep_identical_policies(assets, tmp_path, algo):
    out = tmp_path / "run"
    result = accelerate_launch(
        *fast(
            out,
            "device=cpu",
            "trainer.threads=1",
            "trainer.updates=3",
            "algo.lr=1e-3",
            "trainer.samples_per_update=3",
            *algo,
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["replica_max_abs_diff"] == 0.0  # the all-reduce kept the replicas equal
    assert summary["episodes"] == 3 * 8
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2, 3]  # written once, by the main process
    assert all(math.isfinite(r["objective/kl"]) and math.isfinite(r["loss/policy"]) for r in records)
    assert abs(records[-1]["objective/kl"]) > 1e-3  # the policy did move away from π_ref (a sample KL may be < 0)
    assert len(read_jsonl(out / "samples.jsonl")) == 3 * 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.batch_size=7", "rollout.batch_size: got 7; expected a multiple of the 2 processes"),
        (
            "algo.minibatch_size=8",
            "algo.minibatch_size: got 8; expected a divisor of the per-process batch "
            "rollout.batch_size / processes = 4",
        ),
    ],
)
def test_batch_must_split_evenly_across_processes(assets, tmp_path, override, message):
    result = accelerate_launch(*fast(tmp_path / "run", "device=cpu", "trainer.threads=1", override))
    assert result.returncode != 0
    assert f"textrl: error: {message}" in result.stderr


def test_skipping_nonfinite_batches_needs_one_process(assets, tmp_path):
    result = accelerate_launch(*fast(tmp_path / "run", "device=cpu", "trainer.threads=1", "trainer.on_nonfinite=skip"))
    assert result.returncode != 0
    assert "textrl: error: trainer.on_nonfinite: got 'skip' with several processes; expected 'error'" in result.stderr
