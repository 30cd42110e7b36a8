"""Policies: Hugging Face causal LMs with a value head, their KV-cache decoder, and π_ref."""

from textrl.policies.hf_causal_lm import PolicyWithValueHead, load_causal_lm, load_tokenizer
from textrl.policies.kv_cache import KVCacheDecoder
from textrl.policies.lora import LoraSettings
from textrl.policies.reference import frozen_reference, make_reference
from textrl.policies.sampling import SamplingConfig

__all__ = ["KVCacheDecoder", "LoraSettings", "PolicyWithValueHead", "SamplingConfig", "frozen_reference",
           "make_reference", "load_causal_lm",
           "load_tokenizer"]
