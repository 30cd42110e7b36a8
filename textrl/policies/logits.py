"""Next-token logits in float32, whatever the autocast state: the mixed-precision policy's one rule
for heads.

Under ``trainer.precision=bf16`` the transformer trunk runs under ``torch.autocast`` and its
matmuls round to bfloat16. If the LM head ran under autocast too, its logits would come out
rounded to bf16 (8 bits of mantissa: ±0.4 % of a logit of 10) before any ``log_softmax``, so
PPO's ratio, the KL penalty and the entropy (the KL at the first update, with policy = reference,
included) would carry that rounding. :func:`lm_forward` runs
the trunk under the caller's autocast state and the head in float32 with autocast switched off,
in the head's own weight dtype (float32 weights: a float32 matmul; a model loaded with
``policy.dtype=bfloat16`` keeps its bf16 head, upcast afterwards).

Models whose CausalLM transforms the head's output (soft-capping, logit scaling; see
:func:`has_plain_lm_head`) are run through their own forward, and their logits are upcast after
the fact: under bf16 autocast they keep the head's rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class LMOutput(NamedTuple):
    """One causal-LM pass: ``logits`` ``(B, K, V)`` float32, ``hidden`` ``(B, K, H)`` the last
    hidden state at the same K positions, and the updated KV ``cache`` (``None`` without ``use_cache``)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    cache: object


def has_plain_lm_head(lm: nn.Module) -> bool:
    """True when ``logits = lm_head(base_model(x).last_hidden_state)`` (Llama, GPT-2, Qwen...),
    i.e. the CausalLM applies no soft-capping or scaling that calling the trunk directly would skip."""
    config = lm.config.get_text_config()
    if any(getattr(config, name, None) not in (None, 1.0) for name in LOGIT_TRANSFORMS):
        return False
    return lm.get_output_embeddings() is not None and lm.base_model is not lm


def float32_head(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``head(hidden)`` with autocast off, in the head's weight dtype, returned as float32.

    Args:
        head: a linear layer (LM head or value head), any weight dtype.
        hidden: ``(..., H)`` hidden states, any float dtype.

    Returns:
        ``(..., out_features)`` float32.
    """
    weight = getattr(head, "weight", None)
    dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
    with torch.autocast(hidden.device.type, enabled=False):
        return head(hidden.to(dtype)).float()


def lm_forward(lm: nn.Module, inputs: dict, logits_to_keep: int = 0, plain: bool | None = None) -> LMOutput:
    """One pass of the causal LM ``lm`` with the LM head in float32 (see the module docstring).

    Args:
        lm: a transformers ``PreTrainedModel`` causal LM.
        inputs: keyword arguments of the trunk (``input_ids``, ``attention_mask``,
            ``position_ids``, ``cache``, ``use_cache``).
        logits_to_keep: compute logits only for the last k positions (0 = all).
        plain: :func:`has_plain_lm_head` of ``lm`` if the caller has it already (else computed).

    Returns:
        :class:`LMOutput`; ``logits`` ``(B, K, V)`` float32 where K is L or ``logits_to_keep``.
    """
    if plain is None:
        plain = has_plain_lm_head(lm)
    if plain:  # trunk, then the head on the kept positions: no hidden-state capture
        out = lm.base_model(**inputs)
        hidden = out.last_hidden_state
        hidden = hidden[:, -logits_to_keep:] if logits_to_keep and hidden.shape[1] > logits_to_keep else hidden
        return LMOutput(float32_head(lm.get_output_embeddings(), hidden), hidden, out.cache)
    out = lm(**inputs, output_hidden_states=True, logits_to_keep=logits_to_keep)
    hidden = out.hidden_states[-1]
    hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
    return LMOutput(out.logits.float(), hidden, out.cache)
