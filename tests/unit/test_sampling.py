"""Hand-computed checks of :mod:`textrl.policies.sampling`: temperature, top-k and top-p warps,
sampling, token log-probs and entropy.

Every expected number is worked out in plain Python floats in the test (with the arithmetic in
comments), never by calling the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from textrl.errors import TextRLError
from textrl.policies.sampling import SamplingConfig, entropy_from_logits, sample_tokens, token_logprobs, warp_logits

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


@pytest.mark.parametrize(
    "top_p, expected_kept",
    [
        (0.7, [1, 3]),  # sorted 0.5, 0.3, ...: mass before 3rd = 0.8 >= 0.7 -> keep 2 tokens
        (0.4, [1]),  # the top token alone (0.5) already reaches 0.4
        (0.85, [0, 1, 3]),  # mass before 3rd = 0.8 < 0.85, before 4th = 0.95 >= 0.85 -> keep 3
        (1.0, [0, 1, 2, 3]),
    ],
)
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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0},
        {"temperature": -1.0},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
    ],
)
def test_sampling_config_rejects_bad_values(kwargs):
    with pytest.raises(TextRLError):
        SamplingConfig(**kwargs)
