"""The sampling distribution: temperature, top-k and top-p applied to next-token logits.

Rollouts sample from ``softmax(warp(logits))`` and store ``log_softmax(warp(logits))`` of the
sampled token, so the stored logprobs are those of the distribution actually sampled from. PPO's
importance ratio recomputes them with the same :func:`warp_logits`, so ratio = 1 at the first
minibatch. With top-k/top-p a token that leaves the kept set gets logprob ≈ ``finfo.min``
(a finite "impossible"), so the ratio is 0 for it instead of NaN. The default (temperature 1,
top_k 0, top_p 1) samples the policy itself, as PPO's theory assumes and TRL/OpenRLHF default to.

The KL penalty is a distance between two *models*, not between a model and a truncated sampler, so it
uses the temperature-scaled, **untruncated** distribution of policy and reference alike
(:meth:`SamplingConfig.untruncated`): KL is exactly 0 when policy = reference, whatever top-k/top-p is.
:func:`sample_tokens` returns both log-probs of the sampled token from the one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from textrl.errors import TextRLError


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn: ``temperature`` > 0, ``top_k`` ≥ 0 (0 = off), ``top_p`` in (0, 1]."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise TextRLError(f"rollout.temperature: got {self.temperature}; expected a number > 0")
        if self.top_k < 0:
            raise TextRLError(f"rollout.top_k: got {self.top_k}; expected an integer >= 0 (0 turns it off)")
        if not 0 < self.top_p <= 1:
            raise TextRLError(f"rollout.top_p: got {self.top_p}; expected a number in (0, 1]")

    @property
    def truncates(self) -> bool:
        """Whether top-k or top-p cut the distribution (then sampled ≠ untruncated log-probs)."""
        return self.top_k > 0 or self.top_p < 1.0

    def untruncated(self) -> "SamplingConfig":
        """The same temperature without top-k/top-p: the distribution the KL penalty compares."""
        return SamplingConfig(temperature=self.temperature)


def warp_logits(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p (nucleus) filtering.

    Args:
        logits: ``(..., V)`` next-token logits, any float dtype.
        sampling: the :class:`SamplingConfig`.

    Returns:
        ``(..., V)`` float32 logits; filtered-out entries are ``torch.finfo(float32).min``.
    """
    logits = logits.float()
    if sampling.temperature != 1.0:  # skip a vocabulary-sized copy in the common case
        logits = logits / sampling.temperature
    floor = torch.finfo(logits.dtype).min
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, floor)
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, floor)
    return logits


def sample_tokens(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None):
    """Draw one token per row from ``softmax(warp_logits(logits))``.

    The same as :func:`draw_tokens` applied to :func:`sampling_logprobs`; the compiled decode
    engine runs the second inside its graph and the first (the random draw) outside, so both
    engines consume the generator identically.

    Args:
        logits: ``(B, V)`` next-token logits.
        sampling: temperature / top-k / top-p.
        generator: torch RNG on ``logits.device`` (for reproducible rollouts).

    Returns:
        ``(tokens, logprobs, untruncated_logprobs)``: ``LongTensor[B]``; ``FloatTensor[B]`` the
        log-probability of each token under the distribution it was sampled from (for the
        importance ratio); ``FloatTensor[B]`` its log-probability under the temperature-scaled,
        untruncated distribution (for the KL penalty; the same tensor when nothing truncates).
    """
    return draw_tokens(*sampling_logprobs(logits, sampling), generator)


def sampling_logprobs(logits: torch.Tensor, sampling: SamplingConfig):
    """The deterministic half of :func:`sample_tokens`: ``(logp, untruncated_logp)``, both
    ``FloatTensor[B, V]``: ``log_softmax(warp_logits(logits))`` and, when top-k/top-p truncate,
    ``log_softmax`` of the temperature-scaled untruncated logits (else ``None``)."""
    logp = torch.log_softmax(warp_logits(logits, sampling), dim=-1)
    if not sampling.truncates:
        return logp, None
    return logp, torch.log_softmax(warp_logits(logits, sampling.untruncated()), dim=-1)


def draw_tokens(
    logp: torch.Tensor,
    untruncated_logp: torch.Tensor | None,
    generator: torch.Generator | None = None,
    keepdim: bool = False,
):
    """The random half of :func:`sample_tokens`: one ``torch.multinomial`` draw per row from
    ``exp(logp)`` (``(B, V)`` float32), and the log-probs of the drawn tokens under ``logp`` and
    ``untruncated_logp`` (``None``: the same tensor). Returns ``(tokens, logprobs, untruncated_logprobs)`` as
    :func:`sample_tokens`, each shaped ``(B, 1)`` with ``keepdim`` (no reshapes on a decode path)."""
    tokens = torch.multinomial(logp.exp(), 1, generator=generator)
    sampled = logp.gather(-1, tokens)
    untruncated_sampled = sampled if untruncated_logp is None else untruncated_logp.gather(-1, tokens)
    if keepdim:
        return tokens, sampled, untruncated_sampled
    sampled = sampled.squeeze(-1)
    return tokens.squeeze(-1), sampled, sampled if untruncated_logp is None else untruncated_sampled.squeeze(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, sampling: SamplingConfig | None = None):
    """Log-probabilities of ``tokens`` (``(B, T)`` long) under ``logits`` (``(B, T, V)``).

    With ``sampling`` the logits are warped first (the rollout's distribution); without, only
    the raw softmax is used. Returns ``FloatTensor[B, T]`` (float32).
    """
    logits = warp_logits(logits, sampling) if sampling is not None else logits.float()
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of ``softmax(logits)`` over the last dim; ``(..., V)`` → ``(...)`` float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
