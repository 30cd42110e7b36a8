"""The policy contract (textrl.policies.contract): the built-in PolicyWithValueHead keeps it (members,
shapes, dtypes, the cache), the built-in ``policy=hf`` loader is registered through the public hook
and loads what each stage asks for, and a factory or loader returning something else is one
error line naming the option."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import textrl
from conftest import make_policy
from textrl.config import build_plugin
from textrl.errors import TextRLError
from textrl.plugins import collect_factories, load_plugins
from textrl.policies.contract import POLICY_MEMBERS, check_loader, check_policy
from textrl.stages.build import load_policy


def test_the_builtin_policy_keeps_the_contract(tokenizer):
    policy = check_policy(make_policy(tokenizer), "policy=test", tokenizer)
    assert isinstance(policy, textrl.Policy) and isinstance(policy, torch.nn.Module)
    assert {"lm", "value_head", "adapters", "config", "device", "forward", "save_pretrained"} == set(POLICY_MEMBERS)
    batch = tokenizer(["the movie was very good", "a dog ran"], return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        full = policy(ids, mask)
        prefill = policy(ids, mask, use_cache=True, logits_to_keep=1)
        step = policy(
            ids[:, -1:] * 0 + 4,
            torch.cat([mask, torch.ones_like(mask[:, :1])], 1),
            past_key_values=prefill.past_key_values,
            use_cache=True,
            logits_to_keep=1,
        )
    assert isinstance(full, textrl.PolicyOutput)
    assert full.logits.shape == (2, ids.shape[1], len(tokenizer)) and full.logits.dtype == torch.float32
    assert full.values.shape == ids.shape and full.values.dtype == torch.float32
    assert full.past_key_values is None and prefill.past_key_values is not None
    assert prefill.logits.shape == (2, 1, len(tokenizer)) and step.values.shape == (2, 1)
    torch.testing.assert_close(prefill.logits[:, -1], full.logits[:, -1], rtol=0, atol=1e-5)
    assert policy.device == torch.device("cpu") and policy.adapters is None


def test_hf_is_registered_through_the_public_hook():
    registry = load_plugins(autoload=False)
    assert registry.policies["hf"] is textrl.HFPolicyLoader
    assert registry.providers[("policy", "hf")] == "textrl.policies"
    assert isinstance(textrl.HFPolicyLoader(model="x"), textrl.PolicyLoader)


def test_hf_loads_lora_for_rl_only_and_sft_dropout(tokenizer, tmp_path):
    make_policy(tokenizer).save_pretrained(str(tmp_path), tokenizer)
    node = {"name": "hf", "model": str(tmp_path), "dropout": 0.0, "lora": {"r": 2, "target_modules": ["q_proj"]}}
    loader = check_loader(build_plugin("policy", node, load_plugins(autoload=False).policies), "policy=hf")
    tok = loader.load_tokenizer()
    rl = loader.load_policy(stage="rl", tokenizer=tok, device=torch.device("cpu"))
    evaluated = loader.load_policy(stage="eval", tokenizer=tok, device=torch.device("cpu"))
    sft = loader.load_policy(stage="sft", tokenizer=tok, device=torch.device("cpu"), dropout=0.3)
    assert rl.adapters is not None and evaluated.adapters is None and sft.adapters is None
    assert rl.lm.config.attention_dropout == 0.0 and sft.lm.config.attention_dropout == 0.3
    assert all(p.requires_grad for p in sft.lm.parameters())
    assert not any(p.requires_grad for n, p in rl.lm.named_parameters() if "lora_" not in n)


class _Plugin:
    """In-process policy factories that break the contract in one way each."""

    @textrl.hookimpl
    def textrl_policies(self):
        class Headless:  # a loader whose policy is a bare causal LM, without a value head
            def __init__(self, hidden: int = 8):
                self.hidden = hidden

            def load_tokenizer(self):
                from conftest import make_tokenizer

                return make_tokenizer()

            def load_policy(self, *, stage, tokenizer, device, dropout=None):
                return make_policy(tokenizer, hidden=self.hidden).lm

        class Short(Headless):  # a policy with fewer logits than the tokenizer has tokens
            def load_policy(self, *, stage, tokenizer, device, dropout=None):
                policy = make_policy(tokenizer, hidden=self.hidden)
                policy.lm.config.vocab_size = len(tokenizer) - 1
                return policy

        return {"not_a_loader": lambda: {"a": "dict"}, "headless": Headless, "short": Short}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not_a_loader", "policy=not_a_loader: got a dict from its factory, without ['load_policy', 'load_tokenizer']"),
        (
            "headless",
            "policy=headless: got a LlamaForCausalLM from load_policy(), without ['adapters', 'lm', 'value_head']",
        ),
        ("short", "policy=short: got a policy with 39 logits for a tokenizer of 40 tokens"),
    ],
)
def test_a_factory_breaking_the_contract_is_one_error_line(name, message):
    registry = load_plugins(autoload=False)
    registry.manager.register(_Plugin(), name="contract-breakers")
    collect_factories(registry)
    cfg = OmegaConf.create({"policy": {"name": name}})
    with pytest.raises(TextRLError) as error:
        load_policy(cfg, registry, torch.device("cpu"), "rl")
    text = str(error.value)
    assert text.startswith(message) and "expected" in text and "\n" not in text
