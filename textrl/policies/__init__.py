"""Policies: the policy contract (:mod:`textrl.policies.contract`), the built-in ``policy=hf`` (a
Hugging Face causal LM with a value head), its KV-cache decoder, and π_ref. The built-in is
registered as a plugin, through the same hook as a third party's."""

from textrl.hookspecs import hookimpl
from textrl.policies.contract import Policy, PolicyLoader, PolicyOutput, check_loader, check_policy
from textrl.policies.hf import HFPolicyLoader
from textrl.policies.kv_cache import KVCacheDecoder
from textrl.policies.loading import load_causal_lm, load_tokenizer
from textrl.policies.lora import LoraSettings
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.reference import frozen_reference, make_reference
from textrl.policies.sampling import SamplingConfig


@hookimpl
def textrl_policies():
    """textrl's built-in policy loader: ``hf``."""
    return {"hf": HFPolicyLoader}


__all__ = [
    "HFPolicyLoader",
    "KVCacheDecoder",
    "LoraSettings",
    "Policy",
    "PolicyLoader",
    "PolicyOutput",
    "PolicyWithValueHead",
    "SamplingConfig",
    "check_loader",
    "check_policy",
    "frozen_reference",
    "make_reference",
    "load_causal_lm",
    "load_tokenizer",
]
