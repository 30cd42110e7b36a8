"""textrl's mixed-precision policy, in one place (``trainer.precision``: ``fp32`` | ``bf16``).

What runs in which dtype under ``bf16`` (``fp32`` runs everything in float32):

==========================================  ===========================================================
weights, gradients, AdamW state             float32 (the master weights; nothing is cast in place)
transformer trunk in a loss pass            bfloat16 matmuls under ``torch.autocast`` over the masters
transformer trunk in a rollout              bfloat16 matmuls on a bf16 copy of the trunk's matmul
                                            weights, refreshed once per rollout
                                            (:class:`~textrl.rollout.rollout_weights.RolloutWeights`)
LM head logits, value head V(s)             float32, autocast off (:mod:`textrl.policies.logits`)
log-softmax, log-probs, KL, entropy, GAE,   float32 (computed from the float32 logits and values)
losses
KV cache of the decode engines              one dtype: bf16 (:func:`~textrl.rollout.rollout_weights.single_dtype_cache`)
reward models                               the rollout's autocast (a forward pass); scores float32
==========================================  ===========================================================

**An autocast region wraps forward passes only, never an optimizer step.** ``torch.autocast``
caches the bf16 copy of every trainable float32 weight for the lifetime of the outermost region,
so a region that spans ``optimizer.step()`` keeps running the forward passes on the weights of
before the step: PPO's ratio stays near 1 and clipping never fires. So the rollout (one
``collect()``, which changes no weight) is one region, and each loss forward pass of the
optimisation loop is its own region (:meth:`textrl.algorithms.base.Algorithm.minibatch_step`),
closed before ``backward()`` and the step. A cache therefore lives at most one rollout or one
micro-batch's forward pass. Nothing may wrap ``Algorithm.update`` in an autocast region, not even a
disabled one: regions nest, and autocast clears its cache only when the outermost one closes.

Trade-off, chosen: the optimisation loop uses float32 master weights under autocast (each weight is
cast once per micro-batch forward, kept in autocast's cache until that region closes); the rollout
uses a bf16 copy of the trunk's matmul weights refreshed once per ``collect()``, i.e. after the
previous update's optimizer steps. Without the copy a compiled token step (a graph, which cannot
use autocast's cache) would cast every weight at every token, and the eager engine would re-cast
frozen weights (LoRA's base) at every token; the copy costs 2 bytes per trunk parameter and one
cast per weight per rollout (see :mod:`textrl.rollout.rollout_weights`, which counts both).

What bf16 still costs (tested on CPU, ``tests/unit/test_precision.py`` and
``tests/integration/test_precision_runs.py``, which check both): the trunk's bf16 rounding of small
weight updates means ``policy/approxkl`` within one update is smaller than fp32's on the same seed,
and the rollout's log-probs (cached decode) and π_ref's (teacher-forced) differ by rounding, so the
KL at update 1 (policy = reference) is small but not exactly 0.
"""

from __future__ import annotations

import torch


def autocast(device: torch.device | str, precision: str):
    """The autocast region for one forward pass (or one rollout) under ``trainer.precision``.

    Args:
        device: where the forward pass runs (its type picks CPU or CUDA autocast).
        precision: ``fp32`` (a disabled region: everything float32) or ``bf16`` (matmuls in
            bfloat16; see the module docstring for what stays float32). Validated at startup by
            :func:`textrl.config.check_config`.

    Returns:
        A ``torch.autocast`` context manager. Never enter it around ``optimizer.step()``.
    """
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes matmuls in on ``device``'s type right now; ``None`` when autocast is off."""
    kind = torch.device(device).type
    if not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)
