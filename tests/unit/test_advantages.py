"""Hand-computed checks of :mod:`textrl.algorithms.advantages`: GAE and the masked statistics.

Every expected number is worked out in plain Python floats in the test (with the arithmetic in
comments), never by calling the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from textrl.algorithms.advantages import gae, masked_mean, masked_var, masked_whiten, segment_advantages, state_values

from conftest import F64, t64

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
    assert_close(
        kept,
        t64([[e + 3.0 if m else 0.0 for e, m in zip(er, mr)] for er, mr in zip(expected, XMASK)]),
        rtol=0,
        atol=1e-6,
    )


# ---------------------------------------------------------------------------------------------
# Segments between branched states (VinePPO, same-state baselines)
# ---------------------------------------------------------------------------------------------


def test_state_values_by_hand():
    # actions at 0, 1, 3, 4 (an env token at 2, padding at 5); chosen states at actions 0 and 3
    mask = t64([[1, 1, 0, 1, 1, 0]])
    starts = t64([[1, 0, 0, 1, 0, 0]])
    estimates = t64([[0.5, 9.0, 9.0, 0.25, 9.0, 9.0]])  # read at the starts only
    assert_close(state_values(estimates, starts, mask), t64([[0.5, 0.5, 0.0, 0.25, 0.25, 0.0]]))


def test_segment_advantages_by_hand():
    # two segments: actions {0, 1} from s0 (V̂ 0.5) and {3, 4} from s3 (V̂ 0.25); after them V̂ = 0
    rewards = t64([[0.1, -0.2, 7.0, 0.0, 1.0, 7.0]])  # 7.0: an env token and padding, never read
    mask = t64([[1, 1, 0, 1, 1, 0]])
    starts = t64([[1, 0, 0, 1, 0, 0]])
    estimates = t64([[0.5, 0.0, 0.0, 0.25, 0.0, 0.0]])
    # A_0 = (0.1 - 0.2) + 0.25 - 0.5 = -0.35 ; A_1 = (0 + 1.0) + 0 - 0.25 = 0.75
    expected = t64([[-0.35, -0.35, 0.0, 0.75, 0.75, 0.0]])
    assert_close(segment_advantages(rewards, estimates, starts, mask), expected, rtol=0, atol=1e-12)
    # a branch at every action is the one-step TD advantage r_t + V̂(s_t+1) - V̂(s_t)
    every = t64([[1, 1, 0, 1, 1, 0]])
    values = t64([[0.5, 0.4, 0.0, 0.3, 0.2, 0.0]])
    td = [0.1 + 0.4 - 0.5, -0.2 + 0.3 - 0.4, 0.0, 0.0 + 0.2 - 0.3, 1.0 + 0.0 - 0.2, 0.0]
    assert_close(segment_advantages(rewards, values, every, mask), t64([td]), rtol=0, atol=1e-12)
