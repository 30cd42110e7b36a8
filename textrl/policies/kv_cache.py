"""Incremental decoding for N env slots: one prefill, then one new token per slot per step.

:class:`KVCacheDecoder` keeps the policy's KV cache and the cache's attention mask for every
env slot, so each env step costs one forward pass over N new tokens, the same work
``model.generate`` does. Prompts of different lengths are compacted to the right (left padding)
before the prefill; position ids count real tokens only, so the logits equal a teacher-forced
pass over the env's observation layout (tested to 1e-4 in float32).

A slot whose episode has ended keeps a column of mask 0 per step (its token is ignored). When any
env slot starts a new episode (a reset), call :meth:`KVCacheDecoder.prefill` again with the
current observation: a fresh prefill from the observation is exact for every slot; the rollout
collector resets all slots together, so it prefills once per batch.
"""

from __future__ import annotations

import copy

import torch

from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.positions import position_ids


def compact_left(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the right end (order kept) and cut the columns no row uses.

    Args:
        input_ids: ``(N, L)`` long, any mix of padding and tokens.
        attention_mask: ``(N, L)``, 1 for real tokens; every row needs at least one.

    Returns:
        ``(ids, mask)``, both ``(N, W)`` long, W the longest row's number of real tokens.
    """
    mask = attention_mask.long()
    order = torch.argsort(mask, dim=1, stable=True)  # real tokens to the right, order kept
    ids, mask = input_ids.gather(1, order), mask.gather(1, order)
    width = int(mask.sum(1).max())
    return ids[:, -width:], mask[:, -width:]


class KVCacheDecoder:
    """Decoding state (KV cache, attention mask, next position) of N env slots.

    Args:
        policy: the :class:`PolicyWithValueHead` to run.

    Both methods return ``(logits, values)``: ``FloatTensor[N, V]`` next-token logits and
    ``FloatTensor[N, 1]`` values V(s) of the current states.
    """

    def __init__(self, policy: PolicyWithValueHead):
        self.policy = policy
        self.cache = None
        self.mask: torch.Tensor | None = None  # (N, L_cache) long
        self.next_position: torch.Tensor | None = None  # (N, 1) long

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Run the prompt (or the whole observation) through the model and start the cache.

        Args:
            input_ids: ``(N, L)`` long, any mix of padding and tokens.
            attention_mask: ``(N, L)``, 1 for real tokens; every row needs at least one.
        """
        ids, mask = compact_left(input_ids, attention_mask)
        positions = position_ids(mask)
        out = self.policy(ids, mask, positions, use_cache=True, logits_to_keep=1)
        self.cache, self.mask, self.next_position = out.past_key_values, mask, positions[:, -1:] + 1
        return out.logits[:, -1], out.values

    def step(self, tokens: torch.Tensor, active: torch.Tensor):
        """Feed one token per slot; slots with ``active`` false are masked out.

        Args:
            tokens: ``(N,)`` or ``(N, 1)`` long, the actions just taken.
            active: ``(N,)`` or ``(N, 1)`` bool, slots whose episode is still running.
        """
        tokens = tokens if tokens.dim() == 2 else tokens[:, None]
        active = active if active.dim() == 2 else active[:, None]
        self.mask = torch.cat([self.mask, active], dim=1)  # bool promotes to the mask's long
        out = self.policy(
            tokens, self.mask, self.next_position, past_key_values=self.cache, use_cache=True, logits_to_keep=1
        )
        self.cache = out.past_key_values
        self.next_position = self.next_position + active
        return out.logits[:, -1], out.values

    def branch(self, rows: torch.Tensor) -> "KVCacheDecoder":
        """A decoder whose slot j is slot ``rows[j]`` (``LongTensor[M]``) of this one: each layer's
        cached keys and values, the mask and the next position copied row by row (the prefix is not
        recomputed); this decoder is left as it is."""
        new = KVCacheDecoder(self.policy)
        new.cache = copy.copy(self.cache)
        new.cache.layers = []
        for layer in self.cache.layers:
            copied = copy.copy(layer)
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                copied.keys, copied.values = layer.keys[rows], layer.values[rows]
            new.cache.layers.append(copied)
        new.mask, new.next_position = self.mask[rows], self.next_position[rows]
        return new

    def extend(self, tokens: torch.Tensor, new_mask: torch.Tensor):
        """Feed a ragged block of new tokens per slot in one forward (multi-turn episodes: a slot's
        sampled token followed by the env tokens appended after it, other slots their one token).

        Args:
            tokens: ``(N, K)`` long, each slot's new tokens left-aligned (anything after them).
            new_mask: ``(N, K)`` bool or long, 1 on each slot's real new tokens (a prefix of the
                row; an all-zero row for a slot whose episode has ended).

        Returns:
            ``(logits, values)`` at each slot's last real new token: ``FloatTensor[N, V]`` and
            ``FloatTensor[N, 1]``. Positions continue from each slot's count of real tokens, so the
            result equals a teacher-forced pass over the whole sequence.
        """
        new_mask = new_mask.long()
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        positions = self.next_position + position_ids(new_mask)
        out = self.policy(tokens, self.mask, positions, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        counts = new_mask.sum(1, keepdim=True)
        self.next_position = self.next_position + counts
        last = (counts - 1).clamp(min=0)
        logits = out.logits.gather(1, last[:, :, None].expand(-1, -1, out.logits.shape[-1]))[:, 0]
        return logits, out.values.gather(1, last)
