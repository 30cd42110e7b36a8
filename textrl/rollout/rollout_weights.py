"""The rollout's low-precision weights: a copy of the policy's matmul weights in autocast's dtype,
and a static KV cache of one dtype.

Under ``trainer.precision=bf16`` :class:`RolloutWeights` is a shallow copy of the policy whose trunk
``nn.Linear`` (and GPT-2 ``Conv1D``) weights and biases are stored in bf16, refreshed from the
float32 masters by one cast per weight per ``collect()``; everything else (embeddings, norms, the LM
and value heads, buffers) is shared. No token step then casts a weight, and the copy computes what
autocast with the masters computes. :func:`single_dtype_cache` keeps a static cache's keys and
values in one dtype. Why, and what each costs: the docs page "The decode engines"
(``docs/concepts/decode-engines.md``, section Precision), measured by
``tests/benchmarks/rollout_precision.py``.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from textrl.sharding import is_sharded


def _matmul_modules(policy: nn.Module) -> list[nn.Module]:
    """The trunk's matmul layers: ``nn.Linear`` and transformers ``Conv1D`` modules of ``policy.lm``,
    without the LM head (output embeddings) and the value head."""
    lm = policy.lm
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    excluded = {
        id(p)
        for m in (head, getattr(policy, "value_head", None), lm.get_input_embeddings())
        if m is not None
        for p in m.parameters()
    }
    found = []
    for module in lm.modules():
        if module is head:
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            if not any(id(p) in excluded for p in module.parameters(recurse=False)):
                found.append(module)
    return found


def needs_rollout_weights(policy: nn.Module, dtype: torch.dtype | None) -> bool:
    """True when autocast to ``dtype`` would cast some trunk matmul weight of ``policy`` (a float32
    weight), unless ``policy`` is sharded: a sharded module cannot be copied, and its rollout runs
    under autocast alone (:mod:`textrl.sharding`)."""
    if dtype is None or is_sharded(policy):
        return False
    return any(
        p.is_floating_point() and p.dtype != dtype for m in _matmul_modules(policy) for p in m.parameters(recurse=False)
    )


class RolloutWeights:
    """A copy of ``policy`` for rollouts whose trunk matmul weights are stored in ``dtype`` (see the
    module docstring); every other parameter and buffer is shared with ``policy``.

    Args:
        policy: a :class:`~textrl.policies.policy.PolicyWithValueHead` (float32 masters).
        dtype: autocast's dtype, e.g. ``torch.bfloat16``.

    Attributes:
        policy: the copy (eval mode, no gradients), to run under ``torch.no_grad`` and autocast.
        numel: number of parameters held in ``dtype`` (the copy's extra memory is
            ``numel · dtype's itemsize`` bytes).
    """

    def __init__(self, policy: nn.Module, dtype: torch.dtype):
        self.dtype = dtype
        memo: dict[int, object] = {}
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        cast = {id(p) for m in _matmul_modules(policy) for p in m.parameters(recurse=False) if p.is_floating_point()}
        with torch.no_grad():
            for p in policy.parameters():
                if id(p) in cast:
                    low = nn.Parameter(p.detach().to(dtype), requires_grad=False)
                    memo[id(p)] = low
                    self._pairs.append((low, p))
                else:
                    memo[id(p)] = p
        for b in policy.buffers():
            memo[id(b)] = b
        adapters = policy.__dict__.get("adapters")
        if adapters is not None:  # the PeftModel wrapper: not needed to run the copy
            memo[id(adapters)] = None
        self.policy = copy.deepcopy(policy, memo).eval()
        self.numel = sum(low.numel() for low, _ in self._pairs)

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the float32 masters into the low-precision copy in place (addresses unchanged, so a
        captured CUDA graph keeps reading them): one rounding cast per weight."""
        for low, master in self._pairs:
            low.copy_(master)


@functools.cache
def _single_dtype_class(cls: type) -> type:
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return cls.update(self, key_states.to(self.cache_dtype), value_states.to(self.cache_dtype), *args, **kwargs)

    doc = f"{cls.__name__} whose keys and values are cast to ``cache_dtype`` before they are stored."
    return type(f"SingleDtype{cls.__name__}", (cls,), {"update": update, "__doc__": doc})


def single_dtype_cache(cache, dtype: torch.dtype):
    """Make every layer of a transformers ``StaticCache`` store keys and values in ``dtype``
    (allocated in ``dtype`` at the first update, each update cast to it). Returns ``cache``."""
    for layer in cache.layers:
        layer.__class__ = _single_dtype_class(type(layer))
        layer.cache_dtype = dtype
    return cache
