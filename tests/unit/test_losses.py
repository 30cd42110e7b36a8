"""Hand-computed checks of :mod:`textrl.algorithms.losses`: the clipped PPO policy and value losses
and explained variance.

Every expected number is worked out in plain Python floats in the test (with the arithmetic in
comments), never by calling the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from textrl.algorithms.losses import explained_variance, ppo_policy_loss, value_loss

from conftest import t64

# ---------------------------------------------------------------------------------------------
# PPO policy loss
# ---------------------------------------------------------------------------------------------


def test_ppo_policy_loss_hand_computed():
    eps = 0.2
    # five real tokens (row 0: three, row 1: two) + one padded token with garbage
    ratios = [[1.1, 1.5, 0.5], [0.5, 1.5, 3.0]]
    advs = [[1.0, 2.0, 1.0], [-1.0, -1.0, 10.0]]
    mask = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    old = t64([[-1.0, -2.0, -0.5], [-0.7, -1.2, -3.0]])
    logp = (old + torch.log(t64(ratios))).requires_grad_(True)

    # per token: max(-A*rho, -A*clip(rho, 0.8, 1.2))
    #  rho=1.1, A=+1: max(-1.1, -1.1) = -1.1  (inside the range: not clipped)
    #  rho=1.5, A=+2: max(-3.0, -2.4) = -2.4  (clipped term larger -> clipped)
    #  rho=0.5, A=+1: max(-0.5, -0.8) = -0.5  (not clipped)
    #  rho=0.5, A=-1: max( 0.5,  0.8) =  0.8  (clipped)
    #  rho=1.5, A=-1: max( 1.5,  1.2) =  1.5  (not clipped)
    expected_loss = (-1.1 - 2.4 - 0.5 + 0.8 + 1.5) / 5  # = -0.34
    expected_clipfrac = 2 / 5
    expected_approxkl = (
        0.5
        * (math.log(1.1) ** 2 + math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(0.5) ** 2 + math.log(1.5) ** 2)
        / 5
    )

    out = ppo_policy_loss(logp, old, t64(advs), t64(mask), eps)
    assert out.loss.item() == pytest.approx(expected_loss, abs=1e-9)
    assert out.loss.item() == pytest.approx(-0.34, abs=1e-9)
    assert out.clipfrac.item() == pytest.approx(expected_clipfrac, abs=1e-6)
    assert out.approxkl.item() == pytest.approx(expected_approxkl, abs=1e-9)

    # gradient: d/dlogp of -A*rho/5 is -A*rho/5 on unclipped tokens, 0 on clipped and padding
    out.loss.backward()
    expected_grad = [[-1.0 * 1.1 / 5, 0.0, -1.0 * 0.5 / 5], [0.0, 1.0 * 1.5 / 5, 0.0]]
    assert_close(logp.grad, t64(expected_grad), rtol=0, atol=1e-9)


def test_ppo_policy_loss_ratio_one_is_minus_mean_advantage():
    old = t64([[-1.0, -2.0], [-0.5, -0.1]])
    adv = t64([[1.0, -3.0], [2.0, 50.0]])
    mask = t64([[1.0, 1.0], [1.0, 0.0]])
    out = ppo_policy_loss(old.clone(), old, adv, mask, 0.2)
    assert out.loss.item() == pytest.approx(-(1.0 - 3.0 + 2.0) / 3)  # = 0
    assert out.clipfrac.item() == 0.0
    assert out.approxkl.item() == 0.0


# ---------------------------------------------------------------------------------------------
# value loss, explained variance
# ---------------------------------------------------------------------------------------------

V = [[1.0, 0.0, 2.0], [0.0, 100.0, 100.0]]
V_OLD = [[0.5, 0.1, 1.0], [1.0, 0.0, 0.0]]
RET = [[1.2, -1.0, 3.0], [2.0, 0.0, 0.0]]
VMASK = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]


def test_value_loss_clipped_hand_computed():
    # eps_v = 0.2, V_clip = V_old + clip(V - V_old, -0.2, 0.2)
    #  V=1.0 Vo=0.5 R=1.2: Vc=0.7; (1-1.2)^2=0.04 vs (0.7-1.2)^2=0.25 -> 0.25 (clipped)
    #  V=0.0 Vo=0.1 R=-1 : Vc=0.0; 1.0 vs 1.0                       -> 1.0  (not clipped)
    #  V=2.0 Vo=1.0 R=3.0: Vc=1.2; 1.0 vs (1.2-3)^2=3.24            -> 3.24 (clipped)
    #  V=0.0 Vo=1.0 R=2.0: Vc=0.8; 4.0 vs (0.8-2)^2=1.44            -> 4.0  (not clipped)
    expected = 0.5 * (0.25 + 1.0 + 3.24 + 4.0) / 4  # = 1.06125
    values = t64(V).requires_grad_(True)
    out = value_loss(values, t64(V_OLD), t64(RET), t64(VMASK), 0.2)
    assert out.loss.item() == pytest.approx(expected, abs=1e-9)
    assert out.loss.item() == pytest.approx(1.06125, abs=1e-9)
    assert out.clipfrac.item() == pytest.approx(2 / 4)
    out.loss.backward()
    # grad of 0.5*(V-R)^2/4 = (V-R)/4 where the unclipped term wins (tokens 2 and 4), else 0
    expected_grad = [[0.0, (0.0 - (-1.0)) / 4, 0.0], [(0.0 - 2.0) / 4, 0.0, 0.0]]
    assert_close(values.grad, t64(expected_grad), rtol=0, atol=1e-9)


def test_value_loss_unclipped_hand_computed():
    # 0.5 * mean((V - R)^2) over real tokens: 0.04, 1.0, 1.0, 4.0
    expected = 0.5 * (0.04 + 1.0 + 1.0 + 4.0) / 4  # = 0.755
    out = value_loss(t64(V), t64(V_OLD), t64(RET), t64(VMASK), None)
    assert out.loss.item() == pytest.approx(expected, abs=1e-9)
    assert out.loss.item() == pytest.approx(0.755, abs=1e-9)
    assert out.clipfrac.item() == 0.0


def test_explained_variance():
    returns = t64([[1.0, 2.0, 4.0], [-1.0, 3.0, 999.0]])
    mask = t64([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert explained_variance(returns.clone(), returns, mask).item() == pytest.approx(1.0)
    # a constant offset leaves Var(R - V) = 0 -> still 1
    assert explained_variance(returns - 0.5, returns, mask).item() == pytest.approx(1.0)
    # predicting 0 everywhere: 1 - Var(R)/Var(R) = 0
    assert explained_variance(torch.zeros_like(returns), returns, mask).item() == pytest.approx(0.0, abs=1e-12)


def test_ppo_policy_loss_finite_with_cut_off_tokens_and_padding():
    floor = torch.finfo(torch.float32).min
    # token (0, 1) was cut off by top-k since the rollout (log π ≈ finfo.min); (1, 1) is padding
    logp = torch.tensor([[-1.0, floor], [-0.5, floor]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    out = ppo_policy_loss(
        logp, old, torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]), 0.2
    )
    # ρ = 1, 0, 1 on the real tokens: max(−1, −1) + max(0·(−1), −0.8) + max(1, 1) = −1 + 0 + 1
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    # approxkl: ½·(0 + 20² + 0)/3, the cut-off token's log ρ capped at 20 nats
    assert out.approxkl.item() == pytest.approx(0.5 * 400 / 3, rel=1e-6)
    out.loss.backward()
    assert torch.isfinite(logp.grad).all()
