"""The reward model's K-wise ranking loss (InstructGPT, Ouyang et al. 2022, eq. 1).

For one prompt x with K ranked responses, every pair (y_w, y_l) where y_w is ranked above y_l:

    loss(x) = −1/P · Σ_{(w, l)} log σ(r(x, y_w) − r(x, y_l))

P is the number of ordered pairs, C(K, 2) when there are no ties; tied pairs carry no
preference and are skipped (so P < C(K, 2) with ties). The batch loss is the mean over prompts.
All pairs of one prompt are in the same batch and each response is scored once: K forward
passes per prompt, not C(K, 2) (InstructGPT §3.5 explains why this avoids overfitting and saves
compute).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from textrl.errors import TextRLError


class RankingPairs(NamedTuple):
    """Index tensors of the ordered pairs of a batch of ranked groups.

    ``winner[i]``, ``loser[i]`` index the flat score vector; ``weight[i] = 1 / (P_g · G)`` so the
    weighted sum over pairs is the mean over the G prompts of each prompt's mean pair loss.
    """

    winner: torch.Tensor
    loser: torch.Tensor
    weight: torch.Tensor


def ranking_pairs(rankings: Sequence[Sequence[int]], device=None) -> RankingPairs:
    """Build the ordered pairs of several ranked groups laid out back to back.

    Args:
        rankings: one list per prompt, the rank of each of its K responses in the order they
            appear in the flat score vector; 0 is best, equal ranks are ties.

    Raises:
        TextRLError: a group with fewer than 2 responses, or with all responses tied.
    """
    winner, loser, weight = [], [], []
    offset = 0
    groups = len(rankings)
    for g, ranks in enumerate(rankings):
        pairs = [(offset + i, offset + j) for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j]]
        if len(ranks) < 2 or not pairs:
            raise TextRLError(
                f"ranking {list(ranks)} of prompt {g}: expected at least 2 responses with different ranks (0 = best)"
            )
        winner += [w for w, _ in pairs]
        loser += [lo for _, lo in pairs]
        weight += [1.0 / (len(pairs) * groups)] * len(pairs)
        offset += len(ranks)
    as_long = dict(dtype=torch.long, device=device)
    return RankingPairs(
        torch.tensor(winner, **as_long),
        torch.tensor(loser, **as_long),
        torch.tensor(weight, dtype=torch.float32, device=device),
    )


def ranking_loss(scores: torch.Tensor, pairs: RankingPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """The K-wise ranking loss and the pairwise accuracy.

    Args:
        scores: ``(N,)`` reward-model scores r(x, y) of every response in the batch (one per
            response, so N = Σ K).
        pairs: from :func:`ranking_pairs`.

    Returns:
        ``(loss, accuracy)``: scalar loss (to minimise) and the fraction of pairs with
        ``r_w > r_l`` (unweighted).
    """
    margin = scores[pairs.winner] - scores[pairs.loser]
    loss = -(F.logsigmoid(margin) * pairs.weight).sum()
    return loss, (margin > 0).float().mean()
