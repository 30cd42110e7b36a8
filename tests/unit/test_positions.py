"""Position ids of left-padded rows (textrl.policies.positions)."""

from __future__ import annotations

import torch

from textrl.policies.positions import position_ids


def test_position_ids_count_real_tokens_from_zero_after_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]
    assert position_ids(mask).tolist() == expected
    assert position_ids(mask.bool()).tolist() == expected and position_ids(mask.bool()).dtype == torch.int64
