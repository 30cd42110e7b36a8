"""Decode engines: how the rollout collector turns "the tokens just taken" into the next draw.

``rollout.engine`` picks ``eager`` (:class:`EagerEngine`: the policy's forward with a growing KV
cache, op by op), ``compiled`` (:class:`CompiledEngine`: a static KV cache allocated once per engine
and a ``torch.compile`` d token step, on CUDA a CUDA-graph replay) or ``auto`` (compiled on CUDA,
eager elsewhere; a failing compile falls back to eager with one warning line). Both draw with
``torch.multinomial`` and the collector's generator outside any graph, so the same seed gives the
same tokens whichever engine runs; both keep the distribution of their last draw, which a branch of
the state (``branch``) redraws from with a stream of its own. Env tokens of a multi-turn episode
reach the cache by one ragged ``extend``; under bf16 autocast both decode with a bf16 copy of the
trunk's matmul weights (:mod:`textrl.rollout.rollout_weights`). The design and its reasons (the
draw outside the graph, precision, ragged extends and compacting the static cache, branching) are
on the docs page "The decode engines" (``docs/concepts/decode-engines.md``).
"""

from __future__ import annotations

import copy
import logging
import types
from typing import NamedTuple

import torch
from transformers import StaticCache

from textrl.config.choices import ROLLOUT_ENGINES
from textrl.errors import TextRLError
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.kv_cache import KVCacheDecoder, compact_left
from textrl.policies.positions import position_ids
from textrl.policies.sampling import SamplingConfig, draw_tokens, sampling_logprobs
from textrl.precision import autocast_dtype
from textrl.rollout.rollout_weights import RolloutWeights, needs_rollout_weights, single_dtype_cache

log = logging.getLogger(__name__)

ENGINES = ROLLOUT_ENGINES


class Draw(NamedTuple):
    """One token per env slot, each field shaped ``(N, 1)`` (what the next forward takes; no
    reshapes per step): ``tokens`` long, ``logprobs`` float32 (the sampled distribution's, for the
    PPO ratio), ``untruncated_logprobs`` float32 (temperature-scaled, untruncated, for the KL penalty) and
    ``values`` float32 V(s) of the state it was drawn in."""

    tokens: torch.Tensor
    logprobs: torch.Tensor
    untruncated_logprobs: torch.Tensor
    values: torch.Tensor


AUTO_COMPILED = ("cuda",)  # device types on which rollout.engine=auto means compiled


def resolve_engine(name: str, device: torch.device) -> str:
    """``eager`` or ``compiled`` for ``rollout.engine=name`` on ``device`` (``auto``: compiled on
    the device types in ``AUTO_COMPILED``, i.e. CUDA).

    Raises:
        TextRLError: an unknown engine name.
    """
    if name not in ENGINES:
        raise TextRLError(f"rollout.engine: got {name!r}; expected one of {', '.join(ENGINES)}")
    if name == "auto":
        return "compiled" if torch.device(device).type in AUTO_COMPILED else "eager"
    return name


def make_engine(
    name: str,
    policy: PolicyWithValueHead,
    sampling: SamplingConfig,
    vocab_size: int,
    generator: torch.Generator,
    num_envs: int,
    max_len: int,
    backend=None,
    *,
    fallback: bool = False,
):
    """The engine ``name`` (``eager`` or ``compiled``, as :func:`resolve_engine` returns) for
    ``num_envs`` slots of at most ``max_len`` tokens (prompt + response), made for the current
    autocast state. ``backend`` overrides the compile backend and ``fallback`` (true for
    ``rollout.engine=auto``) lets a failing compile fall back to eager (see :class:`CompiledEngine`).

    Raises:
        TextRLError: an unknown engine name.
    """
    name = resolve_engine(name, policy.device)
    if name == "compiled":
        return CompiledEngine(policy, sampling, vocab_size, generator, num_envs, max_len, backend, fallback=fallback)
    return EagerEngine(policy, sampling, vocab_size, generator)


class Engine:
    """What both engines share: the distribution, the generator, the weights they decode with.

    Args:
        policy: the policy with value head.
        sampling: the distribution.
        vocab_size: V, the env's action space (logits past it, e.g. padding rows of the embedding,
            are never sampled).
        generator: the collector's token-sampling RNG.

    An engine is made for the autocast state it is made in: under autocast with float32 trunk
    weights it decodes with a :class:`~textrl.rollout.rollout_weights.RolloutWeights` copy refreshed
    at every ``start``, so no token step casts a weight. ``pending`` holds ``(logp,
    untruncated_logp, values)`` of the last draw, what a branch redraws from (:meth:`redraw`).
    """

    def __init__(
        self, policy: PolicyWithValueHead, sampling: SamplingConfig, vocab_size: int, generator: torch.Generator
    ):
        self.sampling, self.vocab_size, self.generator = sampling, vocab_size, generator
        self.precision = autocast_dtype(policy.device)
        self.weights = RolloutWeights(policy, self.precision) if needs_rollout_weights(policy, self.precision) else None
        self.policy = self.weights.policy if self.weights is not None else policy
        self.pending: tuple = ()

    def redraw(self) -> Draw:
        """A new draw from the distribution of the last one (a branch's first token)."""
        return self.draw(*self.pending)

    def draw(self, logp: torch.Tensor, untruncated_logp: torch.Tensor | None, values: torch.Tensor) -> Draw:
        """Keep ``(logp, untruncated_logp, values)`` as :attr:`pending` and draw one token per slot
        from ``logp`` with :attr:`generator`."""
        self.pending = (logp, untruncated_logp, values)
        return Draw(*draw_tokens(logp, untruncated_logp, self.generator, keepdim=True), values)


class EagerEngine(Engine):
    """The eager engine: :class:`KVCacheDecoder` + the draw (see :class:`Engine` for the arguments)."""

    decoder: KVCacheDecoder | None = None

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Draw:
        """Refresh the rollout weights, prefill the prompts (``(N, P)`` long ids and mask,
        left-padded) and draw the first token."""
        if self.weights is not None:
            self.weights.refresh()
        self.decoder = KVCacheDecoder(self.policy)
        return self._draw(*self.decoder.prefill(input_ids, attention_mask))

    def advance(self, tokens: torch.Tensor, active: torch.Tensor) -> Draw:
        """Feed ``tokens`` (``(N, 1)`` long; slots whose ``active`` (``(N, 1)`` bool) is false are
        masked out) and draw the next."""
        return self._draw(*self.decoder.step(tokens, active))

    def extend(self, tokens: torch.Tensor, new_mask: torch.Tensor) -> Draw:
        """Feed a ragged ``(N, K)`` block (``new_mask`` 1 on each slot's new tokens, left-aligned; see
        :meth:`KVCacheDecoder.extend`) and draw the next token from each slot's last new token."""
        return self._draw(*self.decoder.extend(tokens, new_mask))

    def branch(self, rows: torch.Tensor, generator: torch.Generator) -> "EagerEngine":
        """A new engine whose slot j is slot ``rows[j]`` at the current step (its KV cache rows,
        mask and position copied, the prefix not recomputed), with the distribution of its pending
        draw; :meth:`redraw` samples from it with ``generator``, the branch's own stream."""
        new = copy.copy(self)
        new.generator, new.decoder = generator, self.decoder.branch(rows)
        new.pending = rows_of(self.pending, rows)
        return new

    def _draw(self, logits: torch.Tensor, values: torch.Tensor) -> Draw:
        if logits.shape[-1] != self.vocab_size:
            logits = logits[:, : self.vocab_size]
        return self.draw(*sampling_logprobs(logits, self.sampling), values)


def rows_of(tensors: tuple, rows: torch.Tensor) -> tuple:
    """Each tensor of ``tensors`` cut to ``rows`` (``None`` stays ``None``)."""
    return tuple(None if t is None else t[rows] for t in tensors)


class CompiledEngine(Engine):
    """The compiled engine: a static KV cache and a ``torch.compile`` d token step, its own code
    object per engine (see the docs page "The decode engines").

    Args:
        policy, sampling, vocab_size, generator: as :class:`Engine`.
        num_envs: N, the batch size the cache is allocated for.
        max_len: cache length in tokens: ``max_prompt_tokens + max_episode_tokens``, or with an
            interaction ``max_prompt_tokens + 2 · max_episode_tokens`` (room for ragged blocks).
        backend: ``torch.compile`` backend (a name or a callable); default ``inductor``, with
            ``mode="reduce-overhead"`` (CUDA graphs) on CUDA.
        fallback: what a failing compile does (see :meth:`advance`): ``True`` (``rollout.engine=auto``)
            warns once and runs the same step uncompiled from then on; ``False`` raises.

    Memory: the cache holds ``2 · layers · N · kv_heads · max_len · head_dim`` elements of one dtype
    (autocast's, else the model's), allocated at the first prefill and kept for the engine's life.
    """

    def __init__(
        self,
        policy: PolicyWithValueHead,
        sampling: SamplingConfig,
        vocab_size: int,
        generator: torch.Generator,
        num_envs: int,
        max_len: int,
        backend=None,
        fallback: bool = False,
    ):
        super().__init__(policy, sampling, vocab_size, generator)
        device = policy.device
        self.cuda = device.type == "cuda"
        self.cache_dtype = self.precision or next(p for p in policy.lm.parameters() if p.is_floating_point()).dtype
        self.cache = single_dtype_cache(StaticCache(config=policy.config, max_cache_len=max_len), self.cache_dtype)
        # decoding state, all at fixed addresses so the CUDA graph reads and updates them in place
        self.mask = torch.zeros(num_envs, max_len, dtype=torch.long, device=device)  # 1 = cached real token
        self.position = torch.zeros(num_envs, 1, dtype=torch.long, device=device)  # next position id per slot
        self.column = torch.zeros(1, dtype=torch.long, device=device)  # cache column of the next token
        for t in (self.mask, self.position, self.column):
            torch._dynamo.mark_static_address(t)
        self.filled = 0  # host copy of ``column`` (no sync to read it)
        self.backend = backend or "inductor"
        self.fallback = fallback
        self.failure: str | None = None  # the compile failure this engine fell back from
        self.branches: dict[int, CompiledEngine] = {}  # branch engines by number of slots (see branch)
        self._step = self._compiled(self._token_step)

    def _compiled(self, step):
        """``step`` (a bound :meth:`_token_step`) compiled with a code object of its own."""
        mode = "reduce-overhead" if self.cuda and self.backend == "inductor" else None
        return torch.compile(own_code(step), backend=self.backend, mode=mode, fullgraph=True, dynamic=False)

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Draw:
        """Refresh the rollout weights, prefill (eager) into the static cache and draw the first
        token; see :class:`EagerEngine`.

        Raises:
            TextRLError: a prompt too wide for the cache.
        """
        ids, mask = compact_left(input_ids, attention_mask)
        width = ids.shape[1]
        if width >= self.mask.shape[1]:
            raise TextRLError(
                f"env.max_prompt_tokens: prompt width {width} leaves no room in the static cache of "
                f"{self.mask.shape[1]} tokens; expected fewer"
            )
        if self.weights is not None:
            self.weights.refresh()
        self.cache.reset()
        self.mask.zero_()
        self.mask[:, :width] = mask
        positions = position_ids(mask)
        out = self.policy(ids, self.mask, positions, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.position.copy_(positions[:, -1:] + 1)
        self.column.fill_(width)
        self.filled = width
        logp, untruncated_logp = sampling_logprobs(out.logits[:, -1, : self.vocab_size], self.sampling)
        return self.draw(logp, untruncated_logp, out.values)

    def advance(self, tokens: torch.Tensor, active: torch.Tensor) -> Draw:
        """One compiled token step (a CUDA graph replay on CUDA), then the draw; see :class:`EagerEngine`.

        The step compiles at its first call. If compiling fails (dynamo's recompile limit, no C
        compiler or Python headers for inductor, a Triton or inductor error), the same step runs
        uncompiled on the same static cache; a compile fails before the step has changed any state,
        so the batch continues exactly. With ``fallback`` the engine then warns once (one log line
        naming the cause) and keeps running uncompiled; without, it raises.

        Raises:
            TextRLError: the compile failed and ``fallback`` is off.
        """
        if self.failure is None and self.cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are consumed
        try:
            logp, untruncated_logp, values = self._step(tokens, active)
        except Exception as e:  # noqa: BLE001 - any compile failure; an error of the step itself re-raises below
            if self.failure is not None:
                raise
            logp, untruncated_logp, values = self._token_step(tokens, active)  # raises if the step itself is broken
            self._compile_failed(e)
        self.filled += 1
        # values is read after the next replay overwrites the graph's output buffers: keep a copy
        return self.draw(logp, untruncated_logp, values.clone())

    def extend(self, tokens: torch.Tensor, new_mask: torch.Tensor) -> Draw:
        """Feed a ragged ``(N, K)`` block into the static cache with one eager forward and draw the
        next token from each slot's last real new token (see the module docstring).

        Args:
            tokens: ``(N, K)`` long, each slot's new tokens left-aligned (anything after them).
            new_mask: ``(N, K)`` bool or long, 1 on each slot's real new tokens (a prefix of the row;
                all 0 for a slot whose episode has ended).

        The block goes to cache columns ``[column, column + K)``, positions continue from each
        slot's count of real tokens, so the draw equals :meth:`EagerEngine.extend`'s (and a
        teacher-forced pass over the whole sequence). Compacts the cache first (one host sync) if
        the block would run past its end.

        Raises:
            TextRLError: the block does not fit even after compacting (a cache sized for fewer
                tokens than the episode holds).
        """
        new_mask = new_mask.long()
        width, length = tokens.shape[1], self.mask.shape[1]
        if self.filled + width > length:
            self.compact()
            if self.filled + width > length:
                raise TextRLError(
                    f"env.max_episode_tokens: a block of {width} new tokens does not fit the static "
                    f"cache of {length} tokens ({self.filled} held); expected an engine made with "
                    f"max_len = max_prompt_tokens + 2 * max_episode_tokens"
                )
        start = self.filled
        self.mask[:, start : start + width] = new_mask
        positions = self.position + position_ids(new_mask)
        out = self.policy(tokens, self.mask, positions, past_key_values=self.cache, use_cache=True)
        counts = new_mask.sum(1, keepdim=True)
        self.position.add_(counts)
        self.column.add_(width)
        self.filled += width
        last = (counts - 1).clamp(min=0)
        logits = out.logits.gather(1, last[:, :, None].expand(-1, -1, out.logits.shape[-1]))[:, 0]
        logp, untruncated_logp = sampling_logprobs(logits[:, : self.vocab_size], self.sampling)
        return self.draw(logp, untruncated_logp, out.values.gather(1, last))

    def branch(self, rows: torch.Tensor, generator: torch.Generator) -> "CompiledEngine":
        """:meth:`EagerEngine.branch` into a static cache of ``len(rows)`` slots: the branch engine
        of that size (made, and its step compiled, once per size, then reused; it shares the rollout
        weights) gets each row's cached keys and values, mask and position copied in place."""
        new = self.branches.get(len(rows))
        if new is None:
            new = self.branches[len(rows)] = copy.copy(self)
            new.cache = single_dtype_cache(
                StaticCache(config=self.policy.config, max_cache_len=self.mask.shape[1]), self.cache_dtype
            )
            new.mask, new.position = self.mask[rows].clone(), self.position[rows].clone()
            new.column, new.branches = self.column.clone(), {}
            for t in (new.mask, new.position, new.column):
                torch._dynamo.mark_static_address(t)
            new._step = new._token_step if self.failure is not None else self._compiled(new._token_step)
        for source, target in zip(self.cache.layers, new.cache.layers):
            if not getattr(target, "is_initialized", False):
                target.lazy_initialization(source.keys[rows], source.values[rows])
            target.keys.copy_(source.keys[rows]), target.values.copy_(source.values[rows])
            target.cumulative_length.copy_(source.cumulative_length)
        new.mask.copy_(self.mask[rows]), new.position.copy_(self.position[rows]), new.column.copy_(self.column)
        new.filled, new.generator, new.pending = self.filled, generator, rows_of(self.pending, rows)
        return new

    @torch.no_grad()
    def compact(self) -> None:
        """Move each row's cached real tokens (keys, values, mask) to the left of the static cache,
        order kept, in place (the compiled step keeps its addresses), and set the write column
        (``column``, every layer's ``cumulative_length``) to the longest row's count of real tokens.
        Exact: a masked column has no attention weight and every key keeps its rotary position.
        Costs one host sync (the new column)."""
        if any(getattr(layer, "is_sliding", False) for layer in self.cache.layers):
            raise TextRLError(
                "rollout.engine: got 'compiled' on a sliding-window model whose multi-turn cache needs "
                "compacting; expected rollout.engine=eager"
            )
        used = self.filled
        mask = self.mask[:, :used]
        order = torch.argsort(1 - mask, dim=1, stable=True)  # real columns first, order kept
        self.mask[:, :used] = mask.gather(1, order)
        for layer in self.cache.layers:
            if not getattr(layer, "is_initialized", False):
                continue
            for name in ("keys", "values"):
                store = getattr(layer, name)
                index = order[:, None, :, None].expand(-1, store.shape[1], -1, store.shape[3])
                store[:, :, :used] = store[:, :, :used].gather(2, index)
        self.filled = int(self.mask.sum(1).max())
        self.mask[:, self.filled :] = 0
        self.column.fill_(self.filled)
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(self.filled)

    def _compile_failed(self, error: Exception) -> None:
        self.failure = compile_failure(error)
        if not self.fallback:
            raise TextRLError(
                f"rollout.engine: got 'compiled' but torch.compile failed ({self.failure}); expected "
                f"rollout.engine=auto (falls back to eager) or rollout.engine=eager"
            ) from None
        log.warning("rollout.engine=auto: torch.compile failed (%s); rollouts run eagerly", self.failure)
        self._step = self._token_step

    def _token_step(self, tokens: torch.Tensor, active: torch.Tensor):
        self.mask.index_copy_(1, self.column, active.long())
        out = self.policy(
            tokens, self.mask, self.position, past_key_values=self.cache, use_cache=True, logits_to_keep=1
        )
        self.position.add_(active)
        self.column.add_(1)
        logp, untruncated_logp = sampling_logprobs(out.logits[:, -1, : self.vocab_size], self.sampling)
        return logp, untruncated_logp, out.values


def own_code(method):
    """``method`` (a bound method) re-bound to a copy of its function with a code object of its own.

    Dynamo keeps compiled graphs, and counts recompiles against ``recompile_limit``, per code
    object; a per-engine code object keeps one engine's graphs from counting against another's.
    """
    fn = method.__func__
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__qualname__ = fn.__kwdefaults__, fn.__qualname__
    return types.MethodType(copy, method.__self__)


def compile_failure(error: BaseException) -> str:
    """One line naming a compile failure: the innermost cause's type and first message line."""
    for _ in range(10):
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None or inner is error:
            break
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
