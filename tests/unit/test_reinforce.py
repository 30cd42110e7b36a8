"""REINFORCE: returns, baselines and the gradient against a hand-derived policy gradient."""

from __future__ import annotations


import pytest
import torch

from textrl.algorithms.advantages import rewards_before
from textrl.algorithms.reinforce import Reinforce, episode_returns, leave_one_out_baseline, reinforce_loss
from textrl.errors import TextRLError


def test_episode_returns_by_hand():
    rewards = torch.tensor([[0.0, 1.0], [2.0, 0.0]])  # each score on its episode's last action
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0], [-0.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # row 2's second token is padding
    # row 1: KL = 0.5 + (−1.0) = −0.5 → 1 − 0.1·(−0.5) = 1.05; row 2: KL = 0 → 2.0
    torch.testing.assert_close(episode_returns(rewards, logprobs, ref, mask, beta=0.1), torch.tensor([1.05, 2.0]))


def test_rewards_before_each_action_by_hand():
    # actions at 0, 1, 3, 4 (an env token at 2); turn rewards 0.5 on action 1 and 1.0 on action 4
    rewards = torch.tensor([[0.0, 0.5, 0.0, 0.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]])
    # paid strictly before: 0, 0, (env token: 0), 0.5, 0.5
    torch.testing.assert_close(rewards_before(rewards, mask), torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.5]]))
    single = torch.tensor([[0.0, 0.0, 2.0, 0.0]])  # a single-turn episode: its score on its last action
    assert (rewards_before(single, torch.tensor([[1.0, 1.0, 1.0, 0.0]])) == 0).all()


def test_turn_level_gradient_credits_each_turn_with_its_reward_to_go():
    """Two-turn episodes, one action per turn from softmax(θ): turn 1's action earns r1, turn 2's r2.
    ∇θ of the loss must be −mean_i[(G_i − b)·∇log π(a1) + (G_i − b − r1_i)·∇log π(a2)]."""
    theta = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    actions = torch.tensor([[0, 2], [1, 1]])  # (episode, turn)
    r = torch.tensor([[1.0, 0.5], [-1.0, 2.0]])  # reward of each turn, paid on its action
    baseline = torch.tensor([0.25, 0.25])
    logp = torch.log_softmax(theta, -1)[actions]  # (B, T=2)
    mask = torch.ones(2, 2)
    advantages = r.sum(1) - baseline  # G − b
    reinforce_loss(logp, mask, advantages, rewards_before(r, mask)).backward()
    p = torch.softmax(theta.detach(), -1)
    expected = torch.zeros(3)
    for i in range(2):
        G = float(r[i].sum())
        for t, credit in ((0, G - 0.25), (1, G - 0.25 - float(r[i, 0]))):
            onehot = torch.nn.functional.one_hot(actions[i, t], 3).float()
            expected -= credit * (onehot - p) / 2
    torch.testing.assert_close(theta.grad, expected)


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
