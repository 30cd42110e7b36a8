"""The KL penalty through the real command on the TinyStories model: KL is 0 at the first update
under top-k/top-p for PPO, REINFORCE and GRPO, every output file is strict JSON, and the adaptive
controller steers β the right way on a real run. (The estimators and the controller's arithmetic
are checked by hand in test_losses.py.)"""

from __future__ import annotations

import json
import math

import pytest

from conftest import fast, read_jsonl


TRUNCATED = ["rollout.top_k=20", "rollout.top_p=0.9"]
ALGOS = {
    "ppo": ["algo.epochs=2"],  # a second epoch: tokens may leave the top-k/top-p set after a step
    "ppo_ptx": ["algo=ppo_ptx", "algo.ptx_batch_size=2", "algo.ptx_max_length=16"],  # + algo.ptx_data below
    "reinforce": ["algo=reinforce", "algo.epochs=2"],
    "grpo": ["algo=grpo", "algo.group_size=4"],
}


@pytest.mark.parametrize("algo", list(ALGOS))
def test_kl_is_zero_at_the_first_update_under_top_k_top_p(assets, tmp_path, algo, cli):
    extra = ALGOS[algo]
    if algo == "ppo_ptx":
        extra = [*extra, f"algo.ptx_data={assets / 'tinystories-text' / 'tinystories_1000.json'}"]
    out = tmp_path / "run"
    args = fast(out, "trainer.updates=2", "algo.kl.init=0.1", *TRUNCATED, *extra)
    if algo == "grpo":  # one minibatch per update, so loss/kl of update 1 is the first step's term
        args = [a for a in args if not a.startswith("algo.minibatch_size=")] + ["algo.minibatch_size=8"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")  # no NaN/Infinity tokens anywhere
    read_jsonl(out / "samples.jsonl")
    json.loads((out / "summary.json").read_text(), parse_constant=_reject)
    assert [r["update"] for r in records] == [1, 2]
    for r in records:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float)), r
    # π = π_ref before the first step: the untruncated log-probs agree, so KL is 0 (it was 8.7
    # nats per episode with top_k=20 and 11.4 with top_p=0.9 too when the truncated sampling
    # log-probs were compared with the reference's)
    assert records[0]["objective/kl"] == pytest.approx(0.0, abs=1e-3)
    if "policy/approxkl" in records[0]:
        assert math.isfinite(records[0]["policy/approxkl"])
    assert records[0]["objective/rlhf_reward"] == pytest.approx(records[0]["objective/score"], abs=1e-3)
    if algo == "grpo":
        assert records[0]["loss/kl"] == pytest.approx(0.0, abs=1e-4)  # the in-loss k3 term, first minibatch


def test_an_estimator_changes_the_penalty_not_objective_kl(assets, tmp_path, cli):
    # k2 ≥ 0 per token: the penalised reward is at most the score; objective/kl stays the k1 sum
    out = tmp_path / "run"
    result = cli(*fast(out, "trainer.updates=3", "algo.lr=3e-3", "algo.kl.estimator=k2", "algo.kl.adaptive=false"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert records[-1]["objective/kl"] != 0.0
    for r in records:
        assert r["objective/rlhf_reward"] <= r["objective/score"] + 1e-6


def test_bad_estimator_is_one_line(tmp_path, cli):
    result = cli(*fast(tmp_path / "run", "algo.kl.estimator=k4"))
    assert result.returncode != 0
    assert "textrl: error: algo.kl.estimator: got 'k4'; expected one of ['k1', 'k2', 'k3']" in result.stderr
    assert "Traceback" not in result.stderr


def test_adaptive_controller_steers_beta_toward_the_target_on_tinystories(assets, tmp_path, cli):
    """A short real run (8 updates × 8 episodes of 16 tokens, seconds on an idle CPU): with a 2-nat
    target, a 1-update horizon and a high lr, β must follow the shipped PI rule exactly from the
    logged KL (``e = clip(KL/target − 1, ±1)``, ``I ← max(0, I + e)``, ``β = init·exp(2e + I/horizon)``),
    stay below ``init`` while KL is below target and rise above it once the policy has drifted past
    the target. A run this short cannot show settling (the main-job benchmark does); it shows the
    controller acts at the shipped rule, in the direction that corrects the KL."""
    out = tmp_path / "run"
    init, target, horizon = 0.05, 2.0, 1.0
    result = cli(
        *fast(
            out,
            "trainer.updates=8",
            "algo.minibatch_size=8",
            "algo.epochs=2",
            "env.max_new_tokens=16",
            "algo.lr=3e-3",
            f"algo.kl.init={init}",
            f"algo.kl.target={target}",
            f"algo.kl.horizon={horizon}",
            "trainer.save_policy=false",
        )
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    kls = [r["objective/kl"] for r in records]
    betas = [r["kl/beta"] for r in records]
    assert betas[0] == pytest.approx(init)
    integral = 0.0
    for kl, next_beta in zip(kls, betas[1:]):
        error = min(max(kl / target - 1.0, -1.0), 1.0)
        integral = max(0.0, integral + error)
        assert next_beta == pytest.approx(init * math.exp(2.0 * error + integral / horizon), rel=1e-6)
        if kl < target and integral == 0.0:
            assert next_beta < init  # below target with no overshoot remembered: β eases off
        if kl > target:
            assert next_beta > init  # past the target: β rises above its start to pull KL back
    assert betas[1] < betas[0]  # KL = 0 at update 1: β falls
    assert max(kls) > target  # the policy drifts past the target ...
    assert max(betas) > init  # ... and β rises above its start


def test_a_non_finite_metric_follows_on_nonfinite_and_never_reaches_a_file(tmp_path):
    from textrl.errors import NonFiniteError
    from textrl.io import append_jsonl, atomic_write_json
    from textrl.stages.rl import check_finite_metrics

    check_finite_metrics({"objective/kl": 0.0, "loss/policy": -1.5, "update": 3})
    with pytest.raises(NonFiniteError) as caught:
        check_finite_metrics({"objective/kl": 0.0, "policy/approxkl": float("inf")})
    assert caught.value.quantity == "policy/approxkl"
    # the writers' last line of defence: a value that got past the check is written as null, never NaN
    path = tmp_path / "metrics.jsonl"
    for bad in (float("nan"), float("inf"), -float("inf")):
        append_jsonl(str(path), {"update": 2, "x": bad})
        atomic_write_json(str(tmp_path / "summary.json"), {"last_score": bad})
        assert json.loads((tmp_path / "summary.json").read_text(), parse_constant=_reject) == {"last_score": None}
    assert [json.loads(line, parse_constant=_reject)["x"] for line in path.read_text().splitlines()] == [None] * 3


def _reject(token):
    raise AssertionError(f"non-strict JSON token {token}")
