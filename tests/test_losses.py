"""Hand-computed checks of the pure tensor functions behind PPO: GAE, masked statistics, the
clipped policy/value losses, KL-shaped rewards, the KL controllers and the sampling warps.

Every expected number is worked out in plain Python floats in the test (with the arithmetic in
comments), never by calling the function under test.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.testing import assert_close

from textrl.algorithms.advantages import gae, masked_mean, masked_var, masked_whiten
from textrl.algorithms.kl import AdaptiveKLController, FixedKLController, episode_kl, kl_penalty, kl_shaped_rewards
from textrl.algorithms.losses import explained_variance, ppo_policy_loss, value_loss
from textrl.algorithms.kl import KLConfig, make_kl_controller
from textrl.errors import TextRLError
from textrl.policies.sampling import (SamplingConfig, entropy_from_logits, sample_tokens, token_logprobs,
                                      warp_logits)

F64 = torch.float64


def t64(rows):
    return torch.tensor(rows, dtype=F64)


# ---------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------

GAMMA, LAM = 0.9, 0.8
# episode 0: three real tokens; episode 1: two real tokens, then padding whose reward/value
# entries hold garbage (5.0 and 9.0) that must be ignored.
GAE_REWARDS = [[0.1, -0.2, 1.0], [0.3, 0.7, 5.0]]
GAE_VALUES = [[0.5, 0.4, 0.3], [0.2, 0.6, 9.0]]
GAE_MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def reference_gae(rewards, values, mask, gamma, lam):
    """GAE written out with python floats: an explicit backward loop per episode, V = 0 after
    the last real token (no bootstrap), zeros on padding."""
    advantages, returns = [], []
    for r_row, v_row, m_row in zip(rewards, values, mask):
        n = int(sum(m_row))  # real tokens form a prefix
        adv = [0.0] * len(r_row)
        running = 0.0
        for t in reversed(range(n)):
            next_v = v_row[t + 1] if t + 1 < n else 0.0
            delta = r_row[t] + gamma * next_v - v_row[t]
            running = delta + gamma * lam * running
            adv[t] = running
        advantages.append(adv)
        returns.append([adv[t] + v_row[t] if t < n else 0.0 for t in range(len(r_row))])
    return advantages, returns


def test_gae_hand_computed_two_episodes():
    # Worked by hand, gamma*lam = 0.72:
    # episode 0:
    #   t=2: delta = 1.0 + 0.9*0   - 0.3 =  0.7      A2 = 0.7
    #   t=1: delta = -0.2 + 0.9*0.3 - 0.4 = -0.33    A1 = -0.33 + 0.72*0.7   = 0.174
    #   t=0: delta = 0.1 + 0.9*0.4 - 0.5 = -0.04     A0 = -0.04 + 0.72*0.174 = 0.08528
    #   returns = A + V = 0.58528, 0.574, 1.0
    # episode 1 (last real token t=1, no bootstrap from the padded value 9.0):
    #   t=1: delta = 0.7 + 0.9*0 - 0.6 = 0.1        A1 = 0.1
    #   t=0: delta = 0.3 + 0.9*0.6 - 0.2 = 0.64      A0 = 0.64 + 0.72*0.1 = 0.712
    #   returns = 0.912, 0.7, 0 (padding)
    hand_adv = [[0.08528, 0.174, 0.7], [0.712, 0.1, 0.0]]
    hand_ret = [[0.58528, 0.574, 1.0], [0.912, 0.7, 0.0]]
    loop_adv, loop_ret = reference_gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, GAMMA, LAM)
    # the explicit loop and the hand arithmetic agree
    assert_close(t64(loop_adv), t64(hand_adv), rtol=0, atol=1e-12)
    assert_close(t64(loop_ret), t64(hand_ret), rtol=0, atol=1e-12)

    adv, ret = gae(t64(GAE_REWARDS), t64(GAE_VALUES), t64(GAE_MASK), GAMMA, LAM)
    assert adv.shape == ret.shape == (2, 3)
    assert_close(adv, t64(hand_adv), rtol=0, atol=1e-12)
    assert_close(ret, t64(hand_ret), rtol=0, atol=1e-12)


def test_gae_padding_is_exactly_zero_and_not_bootstrapped():
    adv, ret = gae(t64(GAE_REWARDS), t64(GAE_VALUES), t64(GAE_MASK), GAMMA, LAM)
    assert adv[1, 2].item() == 0.0
    assert ret[1, 2].item() == 0.0
    # last real token of episode 1: A = r - V = 0.7 - 0.6; a bootstrap from the padded value
    # would give 0.7 + 0.9*9.0 - 0.6 = 8.2 instead
    assert adv[1, 1].item() == pytest.approx(0.7 - 0.6, abs=1e-12)
    # changing whatever sits in the padded slot changes nothing
    rewards2 = t64(GAE_REWARDS)
    values2 = t64(GAE_VALUES)
    rewards2[1, 2], values2[1, 2] = -123.0, 456.0
    adv2, ret2 = gae(rewards2, values2, t64(GAE_MASK), GAMMA, LAM)
    assert torch.equal(adv, adv2)
    assert torch.equal(ret, ret2)


def test_gae_gamma_one_lambda_one_is_reward_to_go_minus_value():
    # gamma = lam = 1: A_t = sum_{k>=t} r_k - V_t (the values telescope away)
    rewards = [[1.0, 2.0, 3.0, 0.0]]
    values = [[0.5, -1.0, 2.0, 7.0]]
    mask = [[1.0, 1.0, 1.0, 0.0]]
    # reward-to-go: 1+2+3 = 6, 2+3 = 5, 3
    expected = [[6.0 - 0.5, 5.0 - (-1.0), 3.0 - 2.0, 0.0]]
    adv, ret = gae(t64(rewards), t64(values), t64(mask), 1.0, 1.0)
    assert_close(adv, t64(expected))
    assert_close(ret, t64([[6.0, 5.0, 3.0, 0.0]]))


# ---------------------------------------------------------------------------------------------
# masked statistics
# ---------------------------------------------------------------------------------------------

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]]
XMASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_masked_mean():
    # masked-in entries 1..5: mean = 15 / 5 = 3 (the padded 100 is ignored)
    assert masked_mean(t64(X), t64(XMASK)).item() == pytest.approx(3.0)
    # per row: (1+2+3)/3 = 2, (4+5)/2 = 4.5
    assert_close(masked_mean(t64(X), t64(XMASK), dim=1), t64([2.0, 4.5]))
    # no entry masked in -> 0, not NaN
    assert masked_mean(t64(X), torch.zeros(2, 3, dtype=F64)).item() == 0.0


def test_masked_var():
    # entries 1..5, mean 3: squared deviations 4 + 1 + 0 + 1 + 4 = 10
    assert masked_var(t64(X), t64(XMASK)).item() == pytest.approx(10.0 / 4)  # Bessel: n - 1 = 4
    assert masked_var(t64(X), t64(XMASK), unbiased=False).item() == pytest.approx(10.0 / 5)


def test_masked_whiten():
    x, mask = t64(X), t64(XMASK)
    out = masked_whiten(x, mask)
    # (x - 3) / sqrt(2.5) on the masked-in entries, 0 on padding
    s = math.sqrt(2.5)
    expected = [[(1 - 3) / s, (2 - 3) / s, 0.0], [(4 - 3) / s, (5 - 3) / s, 0.0]]
    assert_close(out, t64(expected), rtol=0, atol=1e-6)
    assert out[1, 2].item() == 0.0
    vals = [out[0, 0].item(), out[0, 1].item(), out[0, 2].item(), out[1, 0].item(), out[1, 1].item()]
    mean = sum(vals) / 5
    var = sum((v - mean) ** 2 for v in vals) / 4
    assert mean == pytest.approx(0.0, abs=1e-9)
    assert var == pytest.approx(1.0, abs=1e-6)
    # shift_mean=False keeps the mean: (x - 3)/sqrt(2.5) + 3 on real tokens, padding still 0
    kept = masked_whiten(x, mask, shift_mean=False)
    assert_close(kept, t64([[e + 3.0 if m else 0.0 for e, m in zip(er, mr)]
                            for er, mr in zip(expected, XMASK)]), rtol=0, atol=1e-6)


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
    expected_approxkl = 0.5 * (math.log(1.1) ** 2 + math.log(1.5) ** 2 + math.log(0.5) ** 2
                               + math.log(0.5) ** 2 + math.log(1.5) ** 2) / 5

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


# ---------------------------------------------------------------------------------------------
# KL-shaped rewards and the KL controllers
# ---------------------------------------------------------------------------------------------


def test_kl_shaped_rewards_hand_computed():
    beta = 0.1
    logp = t64([[-1.0, -2.0, -0.5], [-0.3, -1.5, -9.0], [-0.2, -4.0, -4.0]])
    ref = t64([[-1.5, -1.0, -0.5], [-0.1, -1.0, 0.0], [-0.7, 0.0, 0.0]])
    mask = t64([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    scores = t64([2.0, -1.0, 0.5])
    # kl = logp - ref on real tokens:
    #   row 0: -1+1.5 = 0.5, -2+1 = -1.0, 0.0
    #   row 1: -0.3+0.1 = -0.2, -1.5+1 = -0.5, pad
    #   row 2: -0.2+0.7 = 0.5, pad, pad
    expected_kl = [[0.5, -1.0, 0.0], [-0.2, -0.5, 0.0], [0.5, 0.0, 0.0]]
    # rewards = -0.1*kl, + score on the last real token
    expected_rewards = [
        [-0.05, 0.1, 0.0 + 2.0],
        [0.02, 0.05 + (-1.0), 0.0],
        [-0.05 + 0.5, 0.0, 0.0],
    ]
    rewards, kl = kl_shaped_rewards(scores, logp, ref, mask, beta)
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
    rewards, penalty = kl_shaped_rewards(t64([2.0]), logp, ref, mask, 0.1, "k3")
    assert_close(penalty, t64([k3]), rtol=0, atol=1e-12)
    assert_close(rewards, t64([[-0.1 * k3[0], -0.1 * k3[1] + 2.0]]), rtol=0, atol=1e-12)
    assert_close(episode_kl(logp, ref, mask), t64([0.5 - 1.0]), rtol=0, atol=1e-12)  # objective/kl: k1 sum


def test_ppo_policy_loss_finite_with_cut_off_tokens_and_padding():
    floor = torch.finfo(torch.float32).min
    # token (0, 1) was cut off by top-k since the rollout (log π ≈ finfo.min); (1, 1) is padding
    logp = torch.tensor([[-1.0, floor], [-0.5, floor]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    out = ppo_policy_loss(logp, old, torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
                          0.2)
    # ρ = 1, 0, 1 on the real tokens: max(−1, −1) + max(0·(−1), −0.8) + max(1, 1) = −1 + 0 + 1
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    # approxkl: ½·(0 + 20² + 0)/3, the cut-off token's log ρ capped at 20 nats
    assert out.approxkl.item() == pytest.approx(0.5 * 400 / 3, rel=1e-6)
    out.loss.backward()
    assert torch.isfinite(logp.grad).all()


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


@pytest.mark.parametrize("current_kl, expected", [
    (12.0, 0.1 * (1 + 0.2 / 5)),   # 12/6 - 1 = 1.0 -> clipped to +0.2; horizon 5 updates -> 0.104
    (3.0, 0.1 * (1 - 0.2 / 5)),    # 3/6 - 1 = -0.5 -> clipped to -0.2 -> 0.096
    (6.6, 0.1 * (1 + 0.1 / 5)),    # 6.6/6 - 1 = 0.1 (inside) -> 0.102
    (6.0, 0.1),                    # on target: error 0
])
def test_adaptive_kl_controller_step(current_kl, expected):
    ctl = AdaptiveKLController(0.1, 6.0, 5)
    ctl.update(current_kl)
    assert ctl.value == pytest.approx(expected, rel=1e-12)


def test_adaptive_kl_controller_compounds_and_round_trips():
    ctl = make_kl_controller(KLConfig(init=0.1, adaptive=True, target=6.0, horizon=10))
    assert isinstance(ctl, AdaptiveKLController)
    ctl.update(12.0)
    ctl.update(12.0)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 1.02, rel=1e-12)
    other = AdaptiveKLController(0.5, 6.0, 10)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value


def simulated_kl(beta: float, previous_kl: float, scale: float = 0.6, lag: float = 0.3) -> float:
    """A stand-in for the policy: its KL drifts (lag 0.3 per update) toward an equilibrium
    ``scale/β`` nats, the KL at which the penalty's pull balances the reward's (KL ∝ 1/β)."""
    return previous_kl + lag * (scale / beta - previous_kl)


@pytest.mark.parametrize("init", [0.01, 0.05, 0.5])
def test_adaptive_kl_controller_converges_on_a_simulated_policy(init):
    # target 6 nats needs β = 0.6/6 = 0.1; start 5x too low, 2x too low and 5x too high
    ctl = make_kl_controller(KLConfig(init=init))  # the shipped defaults: target 6, horizon 5 updates
    kl, history = 0.0, []
    for _ in range(60):  # the TinyStories experiment's and the main job's 60 updates
        kl = simulated_kl(ctl.value, kl)
        ctl.update(kl)
        history.append(kl)
    last10 = sum(history[-10:]) / 10
    assert 6.0 / 1.5 <= last10 <= 6.0 * 1.5, (init, history)
    assert ctl.value == pytest.approx(0.1, rel=0.35)


def test_the_old_episode_horizon_barely_moves_beta():
    # Ziegler et al.'s 10,000-episode horizon at 16 episodes per update is horizon = 625 updates:
    # after 60 updates at twice the target β has moved by (1 + 0.2/625)^60 ≈ 1.9% only
    ctl = AdaptiveKLController(0.05, 6.0, 10000 / 16)
    for _ in range(60):
        ctl.update(12.0)
    assert ctl.value == pytest.approx(0.05 * (1 + 0.2 / 625) ** 60, rel=1e-12)
    assert ctl.value < 0.05 * 1.02


@pytest.mark.parametrize("target, horizon", [(0.0, 10), (-1.0, 10), (6.0, 0), (6.0, -2.0), (float("nan"), 10)])
def test_adaptive_kl_controller_rejects_non_positive(target, horizon):
    with pytest.raises(TextRLError):
        AdaptiveKLController(0.1, target, horizon)


@pytest.mark.parametrize("kl, message", [
    ({"estimator": "k4"}, "algo.kl.estimator: got 'k4'; expected one of k1, k2, k3"),
    ({"horizon": 0}, "algo.kl.horizon: got 0; expected a finite positive number of updates"),
    ({"horizon": float("inf")}, "algo.kl.horizon: got inf"),
    ({"target": float("nan")}, "algo.kl.target: got nan"),
    ({"init": -1.0}, "algo.kl.init: got -1.0; expected a finite β >= 0"),
    ({"init": float("inf"), "adaptive": False}, "algo.kl.init: got inf"),
    ({"init": 0.1, "adaptive": False, "estimator": "kl"}, "algo.kl.estimator: got 'kl'"),
])
def test_make_kl_controller_names_the_bad_key(kl, message):
    with pytest.raises(TextRLError, match=re.escape(message)):
        make_kl_controller(kl)


def test_make_kl_controller_rejects_non_positive_target():
    with pytest.raises(TextRLError, match="target"):
        make_kl_controller({"init": 0.1, "adaptive": True, "target": 0.0})


# ---------------------------------------------------------------------------------------------
# sampling: temperature, top-k, top-p
# ---------------------------------------------------------------------------------------------

FLOOR = torch.finfo(torch.float32).min
# probabilities in a shuffled order: index 1 = 0.5, index 3 = 0.3, index 0 = 0.15, index 2 = 0.05
PROBS = [0.15, 0.5, 0.05, 0.3]


def prob_logits():
    return torch.tensor([PROBS]).log()


def kept(warped):
    return (warped[0] > FLOOR).nonzero().flatten().tolist()


def test_temperature_divides_logits():
    logits = torch.tensor([[1.0, -2.0, 0.5, 4.0]])
    out = warp_logits(logits, SamplingConfig(temperature=2.0))
    assert out.dtype == torch.float32
    assert_close(out, torch.tensor([[0.5, -1.0, 0.25, 2.0]]))
    # default config leaves logits untouched
    assert_close(warp_logits(logits, SamplingConfig()), logits)


def test_top_k_keeps_the_two_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [0.0, -1.0, 5.0, 4.0]])
    out = warp_logits(logits, SamplingConfig(top_k=2))
    assert_close(out, torch.tensor([[FLOOR, 3.0, 2.0, FLOOR], [FLOOR, FLOOR, 5.0, 4.0]]))


@pytest.mark.parametrize("top_p, expected_kept", [
    (0.7, [1, 3]),      # sorted 0.5, 0.3, ...: mass before 3rd = 0.8 >= 0.7 -> keep 2 tokens
    (0.4, [1]),         # the top token alone (0.5) already reaches 0.4
    (0.85, [0, 1, 3]),  # mass before 3rd = 0.8 < 0.85, before 4th = 0.95 >= 0.85 -> keep 3
    (1.0, [0, 1, 2, 3]),
])
def test_top_p_keeps_smallest_prefix_reaching_mass(top_p, expected_kept):
    out = warp_logits(prob_logits(), SamplingConfig(top_p=top_p))
    assert kept(out) == expected_kept
    # kept logits are unchanged
    for i in expected_kept:
        assert out[0, i].item() == pytest.approx(math.log(PROBS[i]), abs=1e-6)


def test_top_p_mass_exactly_reaching_top_p_stops_the_prefix():
    # four equal logits: probabilities exactly 0.25 each (exact in float32); mass of the first
    # two kept tokens is exactly 0.5, which reaches top_p = 0.5, so exactly 2 are kept
    out = warp_logits(torch.zeros(1, 4), SamplingConfig(top_p=0.5))
    assert len(kept(out)) == 2
    # 0.25 + 0.25 + 0.25 = 0.75 reaches 0.75 -> 3 kept
    assert len(kept(warp_logits(torch.zeros(1, 4), SamplingConfig(top_p=0.75)))) == 3


def test_temperature_applies_before_top_p():
    # T = 0.5 squares the probabilities: 0.25, 0.09, 0.0225, 0.0025 (sum 0.365)
    # -> 0.6849, 0.2466, ... ; with top_p = 0.6 the top token alone reaches it (1 kept),
    # while at T = 1 the top token has 0.5 < 0.6 so two are kept.
    assert kept(warp_logits(prob_logits(), SamplingConfig(top_p=0.6))) == [1, 3]
    assert kept(warp_logits(prob_logits(), SamplingConfig(temperature=0.5, top_p=0.6))) == [1]


def test_top_k_applies_before_top_p():
    # top_k=3 drops 0.05 and renormalises: 0.5/0.95 = 0.526, 0.3/0.95 = 0.316, 0.15/0.95 = 0.158
    # mass before 3rd = 0.842 >= 0.82 -> 2 kept; without top_k it is 0.8 < 0.82 -> 3 kept
    assert kept(warp_logits(prob_logits(), SamplingConfig(top_p=0.82))) == [0, 1, 3]
    assert kept(warp_logits(prob_logits(), SamplingConfig(top_k=3, top_p=0.82))) == [1, 3]


def test_sample_tokens_stay_in_kept_set_with_renormalised_logprob():
    sampling = SamplingConfig(top_p=0.7)  # keeps index 1 (0.5) and index 3 (0.3)
    n = 4000
    logits = prob_logits().expand(n, 4)
    gen = torch.Generator().manual_seed(1234)
    tokens, logp, untruncated_logp = sample_tokens(logits, sampling, generator=gen)
    assert tokens.shape == (n,) and tokens.dtype == torch.long
    assert logp.shape == (n,) and untruncated_logp.shape == (n,)
    assert set(tokens.tolist()) == {1, 3}
    # log of the kept probability renormalised over the kept mass 0.5 + 0.3 = 0.8
    expected = {1: math.log(0.5 / 0.8), 3: math.log(0.3 / 0.8)}
    assert_close(logp, torch.tensor([expected[t] for t in tokens.tolist()]), rtol=0, atol=1e-5)
    # the KL side: the same tokens under the untruncated distribution, log 0.5 and log 0.3
    untruncated = {1: math.log(0.5), 3: math.log(0.3)}
    assert_close(untruncated_logp, torch.tensor([untruncated[t] for t in tokens.tolist()]), rtol=0, atol=1e-5)
    # frequency of token 1 near 0.625 (std ~0.008 at n=4000; generous bound)
    freq = (tokens == 1).float().mean().item()
    assert abs(freq - 0.625) < 0.05
    # the same seed gives the same draws
    tokens2, _, _ = sample_tokens(logits, sampling, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(tokens, tokens2)


def test_token_logprobs_with_and_without_warp():
    logits = prob_logits()[:, None, :].expand(1, 4, 4)  # (B=1, T=4, V=4)
    tokens = torch.tensor([[0, 1, 2, 3]])
    raw = token_logprobs(logits, tokens)
    assert raw.dtype == torch.float32 and raw.shape == (1, 4)
    assert_close(raw, torch.tensor([[math.log(p) for p in PROBS]]), rtol=0, atol=1e-5)
    warped = token_logprobs(logits, tokens, SamplingConfig(top_p=0.7))
    assert warped[0, 1].item() == pytest.approx(math.log(0.5 / 0.8), abs=1e-5)
    assert warped[0, 3].item() == pytest.approx(math.log(0.3 / 0.8), abs=1e-5)
    # filtered-out tokens: finite, astronomically unlikely (ratio 0 instead of NaN)
    for i in (0, 2):
        assert math.isfinite(warped[0, i].item())
        assert warped[0, i].item() < -1e30


def test_entropy_from_logits():
    V = 7
    ent = entropy_from_logits(torch.zeros(3, V))
    assert ent.shape == (3,)
    assert_close(ent, torch.full((3,), math.log(V)))
    # probabilities 0.5, 0.25, 0.25: H = 0.5*ln 2 + 2 * 0.25*ln 4 = 1.5*ln 2
    ent2 = entropy_from_logits(torch.tensor([0.5, 0.25, 0.25]).log())
    assert ent2.item() == pytest.approx(1.5 * math.log(2), abs=1e-6)


@pytest.mark.parametrize("kwargs", [
    {"temperature": 0}, {"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5},
])
def test_sampling_config_rejects_bad_values(kwargs):
    with pytest.raises(TextRLError):
        SamplingConfig(**kwargs)
