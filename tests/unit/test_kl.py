"""Hand-computed checks of :mod:`textrl.algorithms.kl`: KL penalties, KL-shaped rewards and the KL
controllers.

Every expected number is worked out in plain Python floats in the test (with the arithmetic in
comments), never by calling the function under test.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.testing import assert_close

from textrl.algorithms.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLConfig,
    episode_kl,
    kl_penalty,
    kl_shaped_rewards,
    make_kl_controller,
)
from textrl.errors import TextRLError

from conftest import F64, t64

# ---------------------------------------------------------------------------------------------
# KL-shaped rewards and the KL controllers
# ---------------------------------------------------------------------------------------------


def test_kl_shaped_rewards_hand_computed():
    beta = 0.1
    logp = t64([[-1.0, -2.0, -0.5], [-0.3, -1.5, -9.0], [-0.2, -4.0, -4.0]])
    ref = t64([[-1.5, -1.0, -0.5], [-0.1, -1.0, 0.0], [-0.7, 0.0, 0.0]])
    mask = t64([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    env_rewards = t64([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0], [0.5, 0.0, 0.0]])  # each score on its last action
    # kl = logp - ref on real tokens:
    #   row 0: -1+1.5 = 0.5, -2+1 = -1.0, 0.0
    #   row 1: -0.3+0.1 = -0.2, -1.5+1 = -0.5, pad
    #   row 2: -0.2+0.7 = 0.5, pad, pad
    expected_kl = [[0.5, -1.0, 0.0], [-0.2, -0.5, 0.0], [0.5, 0.0, 0.0]]
    # rewards = env reward - 0.1*kl (the score on the last real token)
    expected_rewards = [
        [-0.05, 0.1, 0.0 + 2.0],
        [0.02, 0.05 + (-1.0), 0.0],
        [-0.05 + 0.5, 0.0, 0.0],
    ]
    rewards, kl = kl_shaped_rewards(env_rewards, logp, ref, mask, beta)
    assert_close(kl, t64(expected_kl), rtol=0, atol=1e-12)
    assert_close(rewards, t64(expected_rewards), rtol=0, atol=1e-12)
    assert kl[1, 2].item() == 0.0 and kl[2, 1].item() == 0.0 and kl[2, 2].item() == 0.0
    assert rewards[1, 2].item() == 0.0


def test_kl_penalty_estimators_hand_computed():
    # log π − log π_ref on real tokens: 0.5, −1.0 | −0.2 ; padding holds finfo.min garbage
    floor = torch.finfo(F64).min
    logp = t64([[-1.0, -2.0, floor], [-0.3, floor, floor]])
    ref = t64([[-1.5, -1.0, -0.5], [-0.1, -2.0, 0.0]])
    mask = t64([[1, 1, 0], [1, 0, 0]])
    d = [[0.5, -1.0], [-0.2]]  # x = log π − log π_ref; Schulman's log r = −x
    k1 = [[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]]
    k2 = [[0.5 * 0.25, 0.5 * 1.0, 0.0], [0.5 * 0.04, 0.0, 0.0]]  # ½x²
    # k3 = (r − 1) − log r = e^(−x) − 1 + x
    k3 = [[math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0, 0.0], [math.exp(0.2) - 1 - 0.2, 0.0, 0.0]]
    assert k3[0][0] == pytest.approx(0.10653066, abs=1e-8) and k3[0][1] == pytest.approx(0.71828183, abs=1e-8)
    for name, expected in (("k1", k1), ("k2", k2), ("k3", k3)):
        out = kl_penalty(logp, ref, mask, name)
        assert torch.isfinite(out).all(), name
        assert_close(out, t64(expected), rtol=0, atol=1e-12)
    assert d  # the rows above are written out from these differences
    with pytest.raises(TextRLError, match="algo.kl.estimator: got 'k4'"):
        kl_penalty(logp, ref, mask, "k4")


def test_kl_penalty_is_zero_when_policy_equals_reference():
    logp = t64([[-0.7, -3.2], [-1.1, -0.01]])
    for name in ("k1", "k2", "k3"):
        assert kl_penalty(logp, logp.clone(), t64([[1, 1], [1, 0]]), name).abs().max().item() == 0.0


def test_kl_shaped_rewards_with_k3_penalty():
    # one episode, two tokens: x = 0.5, −1.0; β = 0.1; score 2.0 paid on the last token
    logp, ref, mask = t64([[-1.0, -2.0]]), t64([[-1.5, -1.0]]), t64([[1, 1]])
    k3 = [math.exp(-0.5) - 0.5, math.exp(1.0) - 2.0]  # e^(−x) − 1 + x
    rewards, penalty = kl_shaped_rewards(t64([[0.0, 2.0]]), logp, ref, mask, 0.1, "k3")
    assert_close(penalty, t64([k3]), rtol=0, atol=1e-12)
    assert_close(rewards, t64([[-0.1 * k3[0], -0.1 * k3[1] + 2.0]]), rtol=0, atol=1e-12)
    assert_close(episode_kl(logp, ref, mask), t64([0.5 - 1.0]), rtol=0, atol=1e-12)  # objective/kl: k1 sum


def test_fixed_kl_controller_is_constant():
    ctl = FixedKLController(0.3)
    for kl in (0.0, 12.0, 1e6):
        ctl.update(kl)
    assert ctl.value == 0.3
    ctl2 = make_kl_controller({"init": 0.3, "adaptive": False})
    assert type(ctl2) is FixedKLController
    ctl2.update(100.0)
    assert ctl2.value == 0.3
    with pytest.raises(TextRLError):
        FixedKLController(-0.1)


@pytest.mark.parametrize(
    "current_kl, expected",
    [
        (12.0, 0.1 * math.exp(2 * 1.0 + 1.0 / 5)),  # e = 12/6 - 1 = 1: I = 1; β = 0.1·e^(2·1 + 1/5)
        (3.0, 0.1 * math.exp(2 * -0.5)),  # e = -0.5: the integral stays at 0 (anti-windup); β = 0.1·e^-1
        (6.6, 0.1 * math.exp(2 * 0.1 + 0.1 / 5)),  # e = 0.1: I = 0.1
        (30.0, 0.1 * math.exp(2 * 1.0 + 1.0 / 5)),  # e = 4 is clipped to 1
        (6.0, 0.1),  # on target: e = 0
    ],
)
def test_adaptive_kl_controller_step(current_kl, expected):
    ctl = AdaptiveKLController(0.1, 6.0, 5)
    ctl.update(current_kl)
    assert ctl.value == pytest.approx(expected, rel=1e-12)


def test_adaptive_kl_controller_integrates_and_round_trips():
    ctl = make_kl_controller(KLConfig(init=0.1, adaptive=True, target=6.0, horizon=10))
    assert isinstance(ctl, AdaptiveKLController)
    ctl.update(12.0)
    ctl.update(9.0)  # e = 1, then 0.5: I = 1.5
    assert ctl.value == pytest.approx(0.1 * math.exp(2 * 0.5 + 1.5 / 10), rel=1e-12)
    ctl.update(6.0)  # on target: the proportional part is 0, the integral keeps β above init
    assert ctl.value == pytest.approx(0.1 * math.exp(1.5 / 10), rel=1e-12)
    other = AdaptiveKLController(0.1, 6.0, 10)  # a resumed run: the same settings, a fresh controller
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value
    ctl.update(7.2)
    other.update(7.2)
    assert other.value == ctl.value  # the integral travelled too


def test_a_warm_up_below_target_does_not_wind_beta_down():
    # every policy starts at π_ref: the KL sits near 0 for the first updates
    ctl = AdaptiveKLController(0.05, 6.0, 5)
    for _ in range(10):
        ctl.update(0.0)
    assert ctl.value == pytest.approx(0.05 * math.exp(-2.0), rel=1e-12)  # only the proportional part
    ctl.update(9.0)  # the first overshoot meets β's full baseline at once
    assert ctl.value == pytest.approx(0.05 * math.exp(2 * 0.5 + 0.5 / 5), rel=1e-12)


def simulated_kl(beta: float, previous_kl: float, scale: float = 0.6, lag: float = 0.3) -> float:
    """A stand-in for the policy: its KL drifts (lag 0.3 per update) toward an equilibrium
    ``scale/β`` nats, the KL at which the penalty's pull balances the reward's (KL ∝ 1/β)."""
    return previous_kl + lag * (scale / beta - previous_kl)


@pytest.mark.parametrize("init", [0.01, 0.05, 0.1])
def test_adaptive_kl_controller_converges_on_a_simulated_policy(init):
    # target 6 nats needs β = 0.6/6 = 0.1; start 10x too low, 2x too low and at it
    ctl = make_kl_controller(KLConfig(init=init))  # the shipped defaults: target 6, horizon 5 updates
    kl, history = 0.0, []
    for _ in range(60):  # the TinyStories experiment's 60 updates
        kl = simulated_kl(ctl.value, kl)
        ctl.update(kl)
        history.append(kl)
    last20 = sum(history[-20:]) / 20
    assert 6.0 * 0.5 <= last20 <= 6.0 * 1.5, (init, history)
    assert ctl.value == pytest.approx(0.1, rel=0.5)


@pytest.mark.parametrize("target, horizon", [(0.0, 10), (-1.0, 10), (6.0, 0), (6.0, -2.0), (float("nan"), 10)])
def test_adaptive_kl_controller_rejects_non_positive(target, horizon):
    with pytest.raises(TextRLError):
        AdaptiveKLController(0.1, target, horizon)


@pytest.mark.parametrize(
    "kl, message",
    [
        ({"estimator": "k4"}, "algo.kl.estimator: got 'k4'; expected one of k1, k2, k3"),
        ({"horizon": 0}, "algo.kl.horizon: got 0; expected a finite positive number of updates"),
        ({"horizon": float("inf")}, "algo.kl.horizon: got inf"),
        ({"target": float("nan")}, "algo.kl.target: got nan"),
        ({"init": -1.0}, "algo.kl.init: got -1.0; expected a finite β >= 0"),
        ({"init": float("inf"), "adaptive": False}, "algo.kl.init: got inf"),
        ({"init": 0.1, "adaptive": False, "estimator": "kl"}, "algo.kl.estimator: got 'kl'"),
    ],
)
def test_make_kl_controller_names_the_bad_key(kl, message):
    with pytest.raises(TextRLError, match=re.escape(message)):
        make_kl_controller(kl)


def test_make_kl_controller_rejects_non_positive_target():
    with pytest.raises(TextRLError, match="target"):
        make_kl_controller({"init": 0.1, "adaptive": True, "target": 0.0})
