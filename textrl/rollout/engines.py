"""Decode engines: how the rollout collector turns "the tokens just taken" into the next draw.

``rollout.engine`` picks one:

- ``eager``: :class:`EagerEngine`, the policy's forward with a growing (dynamic) KV cache
  (:class:`~textrl.policies.kv_cache.KVCacheDecoder`), then :func:`sample_tokens`, op by op.
- ``compiled``: :class:`CompiledEngine`, a transformers ``StaticCache`` sized for prompt +
  ``env.max_new_tokens`` at the batch size, allocated once per collector and reused by every
  batch; the token step (policy forward over N new tokens, value head, logit warp, log-softmax) is
  one ``torch.compile`` graph, on CUDA captured as a CUDA graph (``mode="reduce-overhead"``), so a
  token step is one graph replay, one ``torch.multinomial`` and the env's bookkeeping. The prefill
  stays eager (its width changes from batch to batch).
- ``auto``: ``compiled`` on CUDA, ``eager`` elsewhere (on a CPU the compiled step is not faster
  for the small models textrl trains there, and compiling costs seconds per process).

The random draw stays outside the graph on purpose: ``torch.multinomial`` on ``exp(logp)`` with
the collector's generator is the sampling RNG stream both engines share, so the same seed gives the
same tokens whichever engine runs (inductor would replace the draw with its own Philox stream).
Both engines return the same :class:`Draw` and agree to float rounding (tested: identical tokens,
log-probs and values within 1e-4 in float32).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from textrl.errors import TextRLError
from textrl.policies.hf_causal_lm import PolicyWithValueHead
from textrl.policies.kv_cache import KVCacheDecoder, compact_left
from textrl.policies.positions import position_ids
from textrl.policies.sampling import SamplingConfig, draw_tokens, sampling_logprobs

ENGINES = ("eager", "compiled", "auto")


class Draw(NamedTuple):
    """One token per env slot, each field shaped ``(N, 1)`` (what the next forward takes; no
    reshapes per step): ``tokens`` long, ``logprobs`` float32 (the sampled distribution's, for the
    PPO ratio), ``kl_logprobs`` float32 (temperature-scaled, untruncated, for the KL penalty) and
    ``values`` float32 V(s) of the state it was drawn in."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    kl_logprobs: torch.Tensor
    values: torch.Tensor


def resolve_engine(name: str, device: torch.device) -> str:
    """``eager`` or ``compiled`` for ``rollout.engine=name`` on ``device`` (``auto``: compiled on CUDA).

    Raises:
        TextRLError: an unknown engine name.
    """
    if name not in ENGINES:
        raise TextRLError(f"rollout.engine: got {name!r}; expected one of {', '.join(ENGINES)}")
    if name == "auto":
        return "compiled" if torch.device(device).type == "cuda" else "eager"
    return name


def make_engine(name: str, policy: PolicyWithValueHead, sampling: SamplingConfig, vocab_size: int,
                generator: torch.Generator, num_envs: int, max_len: int, backend: str | None = None):
    """The engine ``rollout.engine=name`` for ``num_envs`` slots of at most ``max_len`` tokens
    (prompt + response). ``backend`` overrides the compile backend (see :class:`CompiledEngine`).

    Raises:
        TextRLError: an unknown engine name.
    """
    name = resolve_engine(name, policy.device)
    if name == "compiled":
        return CompiledEngine(policy, sampling, vocab_size, generator, num_envs, max_len, backend)
    return EagerEngine(policy, sampling, vocab_size, generator)


class EagerEngine:
    """The eager engine: :class:`KVCacheDecoder` + :func:`sample_tokens` (see the module docstring).

    Args:
        policy: the policy with value head; sampling: the distribution; vocab_size: V, the env's
        action space (logits past it, e.g. padding rows of the embedding, are never sampled);
        generator: the collector's token-sampling RNG.
    """

    def __init__(self, policy: PolicyWithValueHead, sampling: SamplingConfig, vocab_size: int,
                 generator: torch.Generator):
        self.policy, self.sampling, self.vocab_size, self.generator = policy, sampling, vocab_size, generator
        self.decoder: KVCacheDecoder | None = None

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Draw:
        """Prefill the prompts (``(N, P)`` long ids and mask, left-padded) and draw the first token."""
        self.decoder = KVCacheDecoder(self.policy)
        return self._draw(*self.decoder.prefill(input_ids, attention_mask))

    def advance(self, tokens: torch.Tensor, active: torch.Tensor) -> Draw:
        """Feed ``tokens`` (``(N, 1)`` long; slots whose ``active`` (``(N, 1)`` bool) is false are
        masked out) and draw the next."""
        return self._draw(*self.decoder.step(tokens, active))

    def _draw(self, logits: torch.Tensor, values: torch.Tensor) -> Draw:
        if logits.shape[-1] != self.vocab_size:
            logits = logits[:, :self.vocab_size]
        return Draw(*draw_tokens(*sampling_logprobs(logits, self.sampling), self.generator, keepdim=True), values)


class CompiledEngine:
    """The compiled engine: a static KV cache and a ``torch.compile`` d token step.

    Args:
        policy, sampling, vocab_size, generator: as :class:`EagerEngine`.
        num_envs: N, the batch size the cache is allocated for.
        max_len: cache length in tokens, prompt width + ``max_new_tokens``.
        backend: ``torch.compile`` backend; default ``inductor``, with ``mode="reduce-overhead"``
            (CUDA graphs) on CUDA. Tests use ``aot_eager`` on CPU: the same graph capture and
            functionalisation, without inductor's code generation (seconds instead of a minute).

    Memory: the cache holds ``2 · layers · N · kv_heads · max_len · head_dim`` elements of the
    model's dtype, allocated at the first prefill and kept for the collector's lifetime.
    """

    def __init__(self, policy: PolicyWithValueHead, sampling: SamplingConfig, vocab_size: int,
                 generator: torch.Generator, num_envs: int, max_len: int, backend: str | None = None):
        from transformers import StaticCache

        self.policy, self.sampling, self.vocab_size, self.generator = policy, sampling, vocab_size, generator
        device = policy.device
        self.cuda = device.type == "cuda"
        self.cache = StaticCache(config=policy.config, max_cache_len=max_len)
        # decoding state, all at fixed addresses so the CUDA graph reads and updates them in place
        self.mask = torch.zeros(num_envs, max_len, dtype=torch.long, device=device)  # 1 = cached real token
        self.position = torch.zeros(num_envs, 1, dtype=torch.long, device=device)  # next position id per slot
        self.column = torch.zeros(1, dtype=torch.long, device=device)  # cache column of the next token
        for t in (self.mask, self.position, self.column):
            torch._dynamo.mark_static_address(t)
        backend = backend or "inductor"
        mode = "reduce-overhead" if self.cuda and backend == "inductor" else None
        self._step = torch.compile(self._token_step, backend=backend, mode=mode, fullgraph=True, dynamic=False)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Draw:
        """Prefill (eager) into the static cache and draw the first token; see :class:`EagerEngine`."""
        ids, mask = compact_left(input_ids, attention_mask)
        width = ids.shape[1]
        if width >= self.mask.shape[1]:
            raise TextRLError(f"env.max_prompt_tokens: prompt width {width} leaves no room in the static cache of "
                              f"{self.mask.shape[1]} tokens; expected fewer")
        self.cache.reset()
        self.mask.zero_()
        self.mask[:, :width] = mask
        positions = position_ids(mask)
        out = self.policy(ids, self.mask, positions, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.position.copy_(positions[:, -1:] + 1)
        self.column.fill_(width)
        logp, kl_logp = sampling_logprobs(out.logits[:, -1, :self.vocab_size], self.sampling)
        return Draw(*draw_tokens(logp, kl_logp, self.generator, keepdim=True), out.values)

    def advance(self, tokens: torch.Tensor, active: torch.Tensor) -> Draw:
        """One compiled token step (a CUDA graph replay on CUDA), then the draw; see :class:`EagerEngine`."""
        if self.cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are consumed
        logp, kl_logp, values = self._step(tokens, active)
        # values is read after the next replay overwrites the graph's output buffers: keep a copy
        return Draw(*draw_tokens(logp, kl_logp, self.generator, keepdim=True), values.clone())

    def _token_step(self, tokens: torch.Tensor, active: torch.Tensor):
        self.mask.index_copy_(1, self.column, active.long())
        out = self.policy(tokens, self.mask, self.position, past_key_values=self.cache, use_cache=True,
                          logits_to_keep=1)
        self.position.add_(active)
        self.column.add_(1)
        logp, kl_logp = sampling_logprobs(out.logits[:, -1, :self.vocab_size], self.sampling)
        return logp, kl_logp, out.values
