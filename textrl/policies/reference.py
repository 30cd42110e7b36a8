"""The reference model π_ref of the KL penalty (InstructGPT: the SFT model, frozen)."""

from __future__ import annotations

import copy

from torch import nn

from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.lora import AdapterDisabledReference


def frozen_reference(policy: PolicyWithValueHead) -> nn.Module:
    """The KL reference π_ref: a frozen copy of the policy's LM at the start of RL.

    Returns a deep copy of ``policy.lm`` with ``requires_grad=False`` in eval mode; its
    weights never change (InstructGPT's SFT model in the KL penalty).
    """
    ref = copy.deepcopy(policy.lm).eval()
    ref.requires_grad_(False)
    return ref


def make_reference(policy: PolicyWithValueHead) -> nn.Module:
    """π_ref for ``policy``: with LoRA adapters, the policy's own network with the adapters
    switched off (:class:`~textrl.policies.lora.AdapterDisabledReference`, no extra weights);
    otherwise a frozen copy (:func:`frozen_reference`)."""
    if policy.adapters is not None:
        return AdapterDisabledReference(policy.adapters)
    return frozen_reference(policy)
