"""Policies: Hugging Face causal LMs with a value head, their KV-cache decoder, and π_ref."""

from textrl.policies.kv_cache import KVCacheDecoder
from textrl.policies.loading import load_causal_lm, load_tokenizer
from textrl.policies.lora import LoraSettings
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.reference import frozen_reference, make_reference
from textrl.policies.sampling import SamplingConfig

__all__ = [
    "KVCacheDecoder",
    "LoraSettings",
    "PolicyWithValueHead",
    "SamplingConfig",
    "frozen_reference",
    "make_reference",
    "load_causal_lm",
    "load_tokenizer",
]
