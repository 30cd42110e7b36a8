"""REINFORCE: returns, baselines and the gradient against a hand-derived policy gradient."""

from __future__ import annotations


import pytest
import torch

from textrl.algorithms.reinforce import Reinforce, episode_returns, leave_one_out_baseline, reinforce_loss
from textrl.errors import TextRLError


def test_episode_returns_by_hand():
    scores = torch.tensor([1.0, 2.0])
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0], [-0.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # row 2's second token is padding
    # row 1: KL = 0.5 + (−1.0) = −0.5 → 1 − 0.1·(−0.5) = 1.05; row 2: KL = 0 → 2.0
    torch.testing.assert_close(episode_returns(scores, logprobs, ref, mask, beta=0.1), torch.tensor([1.05, 2.0]))


def test_leave_one_out_baseline_by_hand():
    returns = torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0, 8.0])
    # group [1,2,6]: (2+6)/2=4, (1+6)/2=3.5, (1+2)/2=1.5; group [0,4,8]: 6, 4, 2
    torch.testing.assert_close(leave_one_out_baseline(returns, 3), torch.tensor([4.0, 3.5, 1.5, 6.0, 4.0, 2.0]))
    with pytest.raises(TextRLError, match="samples_per_prompt: got 1"):
        leave_one_out_baseline(returns, 1)


def test_moving_average_baseline_lags_one_batch():
    algo = Reinforce(baseline="moving_average", baseline_decay=0.5)
    assert algo.baseline_values(torch.tensor([2.0, 4.0]), 1).tolist() == [0.0, 0.0]  # nothing seen yet
    assert algo.running_return == 3.0
    assert algo.baseline_values(torch.tensor([5.0, 5.0]), 1).tolist() == [3.0, 3.0]
    assert algo.running_return == 0.5 * 3.0 + 0.5 * 5.0


def test_gradient_equals_the_policy_gradient_of_a_bandit():
    """One-step episodes from softmax(θ): ∇θ of the loss must be −mean_i A_i·(onehot(a_i) − softmax(θ))."""
    theta = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    actions = torch.tensor([0, 2, 2, 1])
    advantages = torch.tensor([1.0, -0.5, 2.0, 0.25])
    logprobs = torch.log_softmax(theta, -1)[actions][:, None]  # (B, T=1)
    reinforce_loss(logprobs, torch.ones(4, 1), advantages).backward()
    p = torch.softmax(theta.detach(), -1)
    expected = torch.zeros(3)
    for a, adv in zip(actions.tolist(), advantages.tolist()):
        onehot = torch.nn.functional.one_hot(torch.tensor(a), 3).float()
        expected -= adv * (onehot - p) / 4
    torch.testing.assert_close(theta.grad, expected)


def test_unknown_baseline_is_a_clear_error():
    from textrl.config import check_plugin_params

    with pytest.raises(TextRLError, match=r"algo.baseline: got 'median'; expected one of \['none', 'moving_average'"):
        check_plugin_params("algo", {"baseline": "median"}, Reinforce)
    check_plugin_params("algo", {"baseline": "leave_one_out"}, Reinforce)
