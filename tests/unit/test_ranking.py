"""The reward model's K-wise ranking loss against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from textrl.algorithms.ranking import ranking_loss, ranking_pairs
from textrl.errors import TextRLError


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_k3_all_pairs_by_hand():
    scores = torch.tensor([2.0, 0.5, -1.0])  # ranked 0, 1, 2 → pairs (0,1) (0,2) (1,2)
    loss, acc = ranking_loss(scores, ranking_pairs([[0, 1, 2]]))
    expected = -(log_sigmoid(1.5) + log_sigmoid(3.0) + log_sigmoid(1.5)) / 3  # 1/C(3,2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 1.0


def test_k4_with_a_tie_skips_the_tied_pair_and_mixes_with_k3():
    # prompt A: K=4, ranks [1, 0, 1, 2]: responses 0 and 2 tie → 5 ordered pairs, not C(4,2)=6
    # prompt B: K=3 written in reverse order of quality
    scores = torch.tensor([0.0, 1.0, 0.3, -0.2, -1.0, 0.0, 2.0])
    pairs = ranking_pairs([[1, 0, 1, 2], [2, 1, 0]])
    a = [(1, 0), (1, 2), (1, 3), (0, 3), (2, 3)]
    b = [(6, 5), (6, 4), (5, 4)]
    assert sorted(zip(pairs.winner.tolist(), pairs.loser.tolist())) == sorted(a + b)
    s = scores.tolist()
    loss_a = -sum(log_sigmoid(s[w] - s[lo]) for w, lo in a) / 5
    loss_b = -sum(log_sigmoid(s[w] - s[lo]) for w, lo in b) / 3
    loss, acc = ranking_loss(scores, pairs)
    assert loss.item() == pytest.approx((loss_a + loss_b) / 2, rel=1e-6)  # mean over prompts
    wins = sum(s[w] > s[lo] for w, lo in a + b)
    assert acc.item() == pytest.approx(wins / 8)


def test_gradient_pushes_winner_up_and_loser_down():
    scores = torch.tensor([0.0, 0.0], requires_grad=True)
    loss, _ = ranking_loss(scores, ranking_pairs([[0, 1]]))
    loss.backward()
    assert scores.grad.tolist() == pytest.approx([-0.5, 0.5])  # d/dr_w −log σ(r_w − r_l) = −σ(0)


@pytest.mark.parametrize("ranks", [[0], [1, 1, 1]])
def test_groups_without_a_preference_are_rejected(ranks):
    with pytest.raises(TextRLError, match="expected at least 2 responses with different ranks"):
        ranking_pairs([ranks])
