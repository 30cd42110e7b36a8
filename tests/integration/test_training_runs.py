"""Short runs of the ``textrl`` command (in this process, :func:`conftest.run_main`) on the real
TinyStories assets, one per piece that the unit tests check alone: the composite reward, the
PPO-ptx, REINFORCE and LoRA settings, the rule-based reward on hh-rlhf prompts, and seeding."""

from __future__ import annotations

import json
import math

import pytest

from conftest import ASSETS, fast, read_jsonl
from textrl.rewards.rbrm import RuleBasedReward

HH_RLHF = ASSETS / "hh-rlhf-harmless-test" / "harmless-base-test.jsonl.gz"


def test_composite_with_rbrm_trains_through_the_cli(assets, tmp_path, cli):
    out = tmp_path / "run"
    components = "{sentiment: {name: sentiment, weight: 1.0}, rbrm: {name: rbrm, weight: 0.5}}"
    result = cli(*fast(out, "reward=composite", f"reward.components={components}", "trainer.updates=2"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 2
    for r in records:
        for key in ("objective/score", "reward/sentiment", "reward/rbrm", "loss/policy"):
            assert math.isfinite(r[key]), key
        assert r["objective/score"] == pytest.approx(r["reward/sentiment"] + 0.5 * r["reward/rbrm"], abs=1e-5)
    sample = read_jsonl(out / "samples.jsonl")[0]
    assert sample["score"] == pytest.approx(sample["reward/sentiment"] + 0.5 * sample["reward/rbrm"], abs=1e-5)
    assert {"category", "class", "reward"} <= set(sample["details"]["rbrm"])


def test_cli_same_seed_same_metrics_and_samples(assets, tmp_path, cli):
    """Two seeded runs one after the other in one process: ``run`` reseeds everything it draws from."""
    outs = [tmp_path / "a", tmp_path / "b"]
    results = [
        cli(*fast(out, "trainer.updates=2", "seed=7", "trainer.threads=1", "trainer.save_policy=false", "logger=none"))
        for out in outs
    ]
    runs = []
    for out, result in zip(outs, results):
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_jsonl(out / "metrics.jsonl")]
        runs.append((metrics, read_jsonl(out / "samples.jsonl")))
    (metrics_a, samples_a), (metrics_b, samples_b) = runs
    assert [r["update"] for r in metrics_a] == [1, 2] and len(metrics_a[0]) > 5
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN == NaN)
    assert same(metrics_a[0], metrics_b[0]), (metrics_a[0], metrics_b[0])  # first update: scores, losses, KL
    assert same(metrics_a, metrics_b)
    assert samples_a and same(samples_a, samples_b)
    assert any(s["response"] for s in samples_a)  # real generated text was compared


def test_lora_run_through_the_cli(assets, tmp_path, cli):
    out = tmp_path / "run"
    result = cli(*fast(out, "policy.lora.r=4", "policy.lora.alpha=8", "trainer.updates=2"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["objective/kl"]) for r in records)
    assert records[0]["objective/kl"] == pytest.approx(0.0, abs=1e-3)  # π = π_ref before the first step
    assert (out / "policy" / "adapter_model.safetensors").is_file()
    again = cli(*fast(tmp_path / "again", f"policy.model={out / 'policy'}", "trainer.updates=1"))
    assert again.returncode == 0, again.stderr[-2000:]


def test_algo_ppo_ptx_trains_through_the_cli(assets, tmp_path, cli):
    out = tmp_path / "run"
    data = assets / "tinystories-text" / "tinystories_1000.json"
    result = cli(*fast(out, "algo=ppo_ptx", f"algo.ptx_data={data}", "algo.ptx_coef=0.5", "trainer.updates=2"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 2 and all(math.isfinite(r["loss/ptx"]) and r["loss/ptx"] > 0 for r in records)


def test_rbrm_on_hh_rlhf_prompts_through_the_cli(tmp_path, cli):
    """RL against the RBRM on real hh-rlhf red-team prompts; the samples file says which rules fired."""
    if not HH_RLHF.is_file():
        pytest.skip(f"hh-rlhf assets not found at {HH_RLHF}")
    out = tmp_path / "run"
    result = cli(
        *fast(
            out,
            f"data.prompts={HH_RLHF}",
            "reward=rbrm",
            "trainer.updates=1",
            "trainer.samples_per_update=8",
            "env.max_prompt_tokens=48",
        )
    )
    assert result.returncode == 0, result.stderr[-2000:]
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 8
    rbrm = RuleBasedReward()
    for sample in samples:
        details = sample["details"]
        assert (details["category"], details["category_rule"]) == rbrm.classify_prompt(sample["prompt"])
        assert (details["class"], details["class_rule"]) == rbrm.classify_response(sample["response"])
        assert sample["score"] == details["reward"] == rbrm.rewards[details["category"]][details["class"]]
        assert "Human:" not in sample["prompt"]


@pytest.mark.parametrize(
    "baseline, extra", [("none", []), ("moving_average", []), ("leave_one_out", ["rollout.samples_per_prompt=4"])]
)
def test_algo_reinforce_trains_through_the_cli(assets, tmp_path, baseline, extra, cli):
    out = tmp_path / "run"
    result = cli(*fast(out, "algo=reinforce", f"algo.baseline={baseline}", "trainer.updates=2", *extra))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 2
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("objective/score", "objective/kl", "loss/policy", "kl/beta"))
    if baseline == "leave_one_out":
        samples = read_jsonl(out / "samples.jsonl")
        assert samples[0]["prompt"] == samples[3]["prompt"]


def test_vineppo_branches_and_stops_at_its_token_budget(assets, tmp_path, cli):
    """``algo=vineppo`` through the CLI: the rollout branches every 4 actions, the update trains on
    Monte Carlo advantages, and ``trainer.token_budget`` ends the run once the sampled tokens, the
    branches' included, reach it."""
    out = tmp_path / "run"
    branch = ["algo=vineppo", "algo.branch.k=2", "algo.branch.at=tokens", "algo.branch.every=4"]
    result = cli(*fast(out, *branch, "trainer.updates=5", "trainer.token_budget=300", "trainer.save_policy=false"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    spent = [r["perf/sampled_tokens"] for r in records]
    assert sum(spent[:-1]) < 300 <= sum(spent) and len(records) < 5  # stopped at the budget
    for r in records:
        assert r["branch/states"] >= 2 and r["perf/sampled_tokens"] > 8 * r["episode/length"]  # branches sampled too
        assert math.isfinite(r["loss/policy"]) and "loss/value" not in r  # no value head trained
    assert json.loads((out / "summary.json").read_text())["sampled_tokens"] == sum(spent)
