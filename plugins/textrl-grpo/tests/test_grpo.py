"""GRPO plugin: hand-computed advantages and loss, and a CLI run on the real TinyStories assets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import textrl
from textrl_grpo import group_advantages, grpo_loss
from textrl_grpo.grpo import GRPO

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[4] / "shared" / "assets"))


def last_action_rewards(scores, width=3):
    """Single-turn rewards: each score on its episode's last action (column ``width - 1``)."""
    rewards = torch.zeros(len(scores), width)
    rewards[:, -1] = scores
    return rewards, torch.ones(len(scores), width)


def test_group_advantages_by_hand():
    scores = torch.tensor([1.0, 3.0, 0.0, 0.0, 2.0, 4.0])  # groups of 3: [1,3,0] [0,2,4]
    rewards, mask = last_action_rewards(scores)
    # group 1: mean 4/3, std (unbiased) sqrt(((1-4/3)^2 + (3-4/3)^2 + (0-4/3)^2)/2) = sqrt(7/3)
    s1 = math.sqrt(((1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2 + (4 / 3) ** 2) / 2)
    # group 2: mean 2, std sqrt((4 + 0 + 4)/2) = 2
    expected = [(1 - 4 / 3) / s1, (3 - 4 / 3) / s1, (0 - 4 / 3) / s1, -1.0, 0.0, 1.0]
    every_action = torch.tensor(expected)[:, None].expand(6, 3)  # single-turn: one advantage per episode
    torch.testing.assert_close(group_advantages(rewards, mask, 3), every_action, atol=1e-5, rtol=1e-5)
    centred = group_advantages(rewards, mask, 3, scale=False)
    torch.testing.assert_close(centred, torch.tensor([-1 / 3, 5 / 3, -4 / 3, -2.0, 0.0, 2.0])[:, None].expand(6, 3))


def test_group_advantages_credit_each_turn_with_its_reward_to_go():
    # two 2-turn episodes of one prompt: turn rewards on actions 0 and 2 (env token at 1)
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    # returns 3 and 0: mean 1.5; episode 0's second turn is credited 3 − 1 = 2 → 2 − 1.5
    centred = group_advantages(rewards, mask, 2, scale=False)
    torch.testing.assert_close(centred[:, [0, 2]], torch.tensor([[1.5, 0.5], [-1.5, -1.5]]))


def test_a_group_of_equal_returns_is_not_divided_by_eps():
    # both episodes return 1.1, 0.1 of it paid on the first turn: the second turn's credit is 1.0
    rewards = torch.tensor([[0.1, 0.0, 1.0], [0.1, 0.0, 1.0]])
    mask = torch.ones(2, 3)
    advantages = group_advantages(rewards, mask, 2)
    assert advantages.abs().max() <= 0.1 + 1e-6  # -R_<t = -0.1 at most, not -0.1 / 1e-6


@pytest.mark.parametrize("size", [1, 4])
def test_group_size_must_divide_batch_and_be_at_least_two(size):
    with pytest.raises(textrl.TextRLError, match=f"algo.group_size: got {size}"):
        group_advantages(torch.zeros(6, 2), torch.ones(6, 2), size)


def test_group_size_below_two_is_rejected_at_startup():
    from textrl.config import check_plugin_params

    with pytest.raises(textrl.TextRLError, match="algo.group_size: got 1; expected an integer >= 2"):
        check_plugin_params("algo", {"group_size": 1}, GRPO)
    check_plugin_params("algo", {"group_size": 2}, GRPO)


def test_grpo_loss_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0]])
    old = torch.tensor([[-1.0, -2.0]])  # ratio 1: surrogate is −A on each real token
    ref = torch.tensor([[-1.5, -2.0]])
    mask = torch.tensor([[1.0, 1.0]])
    terms = grpo_loss(logprobs, old, ref, torch.tensor([[2.0, 2.0]]), mask, clip_range=0.2, beta=0.1)
    k3 = (math.exp(-0.5) - (-0.5) - 1.0 + 0.0) / 2  # exp(ref−logπ) − (ref−logπ) − 1, averaged
    assert terms["policy"].item() == pytest.approx(-2.0)
    assert terms["kl"].item() == pytest.approx(k3, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(-2.0 + 0.1 * k3, rel=1e-6)


def test_plugin_is_found_through_its_entry_point():
    from textrl.plugins import load_plugins

    registry = load_plugins()
    assert registry.providers[("algo", "grpo")] == "grpo"


@pytest.mark.skipif(not (ASSETS / "tinystories-656k").is_dir(), reason=f"real assets not found at {ASSETS}")
def test_algo_grpo_trains_through_the_cli(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TEXTRL_ASSETS": str(ASSETS)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "textrl",
            "algo=grpo",
            "experiment=tinystories_sentiment",
            "trainer.updates=2",
            "rollout.batch_size=8",
            "algo.group_size=4",
            "algo.minibatch_size=4",
            "env.max_new_tokens=8",
            "trainer.progress_bar=false",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("objective/score", "objective/kl", "loss/policy", "loss/kl"))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"] == samples[3]["prompt"]  # each prompt ran group_size times


def test_plugin_imports_only_the_public_api():
    import ast

    import textrl_grpo

    for path in Path(textrl_grpo.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("textrl."):
                raise AssertionError(f"{path.name} imports internal module {node.module}")
            if isinstance(node, ast.Import):
                internal = [a.name for a in node.names if a.name.startswith("textrl.")]
                assert not internal, f"{path.name} imports internal modules {internal}"
            if isinstance(node, ast.ImportFrom) and node.module == "textrl":
                assert all(a.name in textrl.__all__ for a in node.names), path.name


def test_grpo_runs_on_textrls_loop():
    from textrl_grpo import GRPO

    assert GRPO.update is textrl.Algorithm.update  # the loop (with its gradient-norm check) is textrl's
    algo = GRPO(lr=1e-3, micro_batch_size=2)
    assert algo.micro_batch_size == 2 and not algo.uses_value_head and algo.samples_per_prompt == 4


def test_grpo_kl_term_uses_the_untruncated_logprobs_and_the_chosen_estimator():
    floor = torch.finfo(torch.float32).min
    # sampling log-probs renormalised by top-k (−0.5, and a cut-off token); untruncated −1.0, −3.0
    logprobs = torch.tensor([[-0.5, floor, 0.0]])
    old = torch.tensor([[-0.5, -0.7, 0.0]])
    untruncated = torch.tensor([[-1.0, -3.0, floor]])  # padding holds garbage
    ref = torch.tensor([[-1.0, -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    terms = grpo_loss(logprobs, old, ref, torch.tensor([1.0]), mask, 0.2, 0.1, untruncated, "k3")
    # x = log π − log π_ref = 0, −1 → k3 = e^(−x) − 1 + x = 0, e − 2; mean over the 2 real tokens
    assert terms["kl"].item() == pytest.approx((math.e - 2.0) / 2, rel=1e-6)
    k1 = grpo_loss(logprobs, old, ref, torch.tensor([1.0]), mask, 0.2, 0.1, untruncated, "k1")
    assert k1["kl"].item() == pytest.approx(-0.5, rel=1e-6)  # (0 − 1)/2
    assert all(torch.isfinite(v).all() for v in terms.values())
    same = grpo_loss(
        untruncated[:, :2], untruncated[:, :2], untruncated[:, :2], torch.tensor([1.0]), mask[:, :2], 0.2, 0.1
    )
    assert same["kl"].item() == 0.0  # π = π_ref: the k3 term is exactly 0
