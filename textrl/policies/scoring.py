"""Teacher-forced scoring of responses under a plain causal LM (π_ref): log-probabilities of the
last T tokens, chunked over rows, with the policy's position ids."""

from __future__ import annotations

import torch
from torch import nn

from textrl.policies.logits import lm_forward
from textrl.policies.positions import position_ids
from textrl.policies.sampling import token_logprobs


def teacher_forced_logprobs(
    lm: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_length: int,
    vocab_size: int,
    sampling=None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``(B, T)`` float32 log-probabilities of the last ``response_length`` tokens under a plain
    causal LM (π_ref), teacher-forced in chunks of ``chunk_size`` rows (``None`` = one pass), so
    at most ``chunk_size × T × V`` logits exist at once.

    Args:
        lm: the causal LM.
        input_ids: ``(B, P+T)`` long [left-padded prompt | right-padded response].
        attention_mask: ``(B, P+T)``.
        response_length: T.
        vocab_size: logits beyond the action space are dropped.
        sampling: a :class:`~textrl.policies.sampling.SamplingConfig` (temperature...) applied
            to the logits first, as :func:`~textrl.policies.sampling.token_logprobs`.
        chunk_size: rows per forward pass.
    """
    step = chunk_size or input_ids.shape[0]
    parts = []
    for start in range(0, input_ids.shape[0], step):
        ids, mask = input_ids[start : start + step], attention_mask[start : start + step]
        logits = response_logits(lm, ids, mask, response_length)[..., :vocab_size]
        parts.append(token_logprobs(logits, ids[:, -response_length:], sampling))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def response_logits(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int):
    """Teacher-forced ``(B, T, V)`` float32 logits of a plain causal LM (e.g. π_ref) for the last T
    tokens, with the same position ids as :meth:`PolicyWithValueHead.response_outputs` and the LM
    head in float32 (:func:`~textrl.policies.logits.lm_forward`)."""
    from transformers import PreTrainedModel

    mask = attention_mask.long()
    positions = position_ids(mask)
    inputs = dict(input_ids=input_ids, attention_mask=mask, position_ids=positions)
    if isinstance(lm, PreTrainedModel):
        return lm_forward(lm, inputs, response_length + 1).logits[:, :-1]
    return lm(**inputs, logits_to_keep=response_length + 1).logits[:, :-1].float()
