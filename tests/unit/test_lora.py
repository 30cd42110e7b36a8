"""LoRA through peft: the reference is the policy with its adapters switched off (no weight copy,
equal to the base model), adapters save and load, bad settings are one-line errors, and a LoRA
run trains on the real TinyStories assets."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import ASSETS, length_reward, make_policy
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies import LoraSettings, PolicyWithValueHead, make_reference
from textrl.policies.loading import load_causal_lm
from textrl.policies.lora import add_lora
from textrl.policies.sampling import SamplingConfig
from textrl.policies.scoring import response_logits
from textrl.rollout.collector import RolloutCollector

TINYSTORIES = ASSETS / "tinystories-656k"


def lora_policy(tokenizer, r=4):
    """A tiny random policy, its untouched base LM (a deep copy), and the LoRA-wrapped policy."""
    plain = make_policy(tokenizer)
    base = copy.deepcopy(plain.lm)
    policy = PolicyWithValueHead(add_lora(plain.lm, LoraSettings(r=r, target_modules=["q_proj", "v_proj"])))
    policy.value_head.load_state_dict(plain.value_head.state_dict())
    return policy, base


def perturb_adapters(policy, seed=1):
    """Stand-in for training: give every LoRA B matrix random values (B starts at 0)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


def inputs(tokenizer):
    batch = tokenizer(["the movie was very good", "a dog ran"], return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def test_reference_is_the_base_model_with_no_weights_of_its_own(tokenizer):
    policy, base = lora_policy(tokenizer)
    perturb_adapters(policy)
    reference = make_reference(policy)
    assert list(reference.parameters()) == []
    ids, mask = inputs(tokenizer)
    with torch.no_grad():
        ref = response_logits(reference, ids, mask, 3)
        expected = response_logits(base, ids, mask, 3)
        adapted = policy.response_outputs(ids, mask, 3)[0]
    torch.testing.assert_close(ref, expected, rtol=0, atol=1e-6)
    assert (adapted - expected).abs().max() > 1e-3  # the adapters do change the policy
    # and switching them off for π_ref left them on for the policy
    torch.testing.assert_close(policy.response_outputs(ids, mask, 3)[0].detach(), adapted)


def test_only_adapters_and_value_head_train(tokenizer):
    policy, _ = lora_policy(tokenizer)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("value_head") for n in trainable)
    assert any(n.startswith("value_head") for n in trainable)


def test_rollout_kl_is_zero_before_training_and_positive_after(tokenizer):
    policy, _ = lora_policy(tokenizer)
    env = TokenGenVectorEnv(
        tokenizer,
        ["the movie was", "a dog"],
        length_reward,
        num_envs=4,
        max_new_tokens=5,
        max_prompt_tokens=6,
        autoreset_mode="disabled",
    )
    sampling = SamplingConfig()
    batch = RolloutCollector(env, policy, make_reference(policy), sampling, seed=0).collect()
    torch.testing.assert_close(batch.ref_logprobs, batch.logprobs, rtol=0, atol=1e-5)
    perturb_adapters(policy)
    batch = RolloutCollector(env, policy, make_reference(policy), sampling, seed=0).collect()
    assert ((batch.logprobs - batch.ref_logprobs).abs() * batch.action_mask).max() > 1e-3


def test_adapters_save_and_load_back(tokenizer, tmp_path):
    policy, base = lora_policy(tokenizer)
    perturb_adapters(policy)
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    policy.base = (str(base_dir), None)
    policy.save_pretrained(str(tmp_path / "policy"), tokenizer)
    saved = {p.name for p in (tmp_path / "policy").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "value_head.safetensors"} <= saved
    assert "model.safetensors" not in saved  # the adapters only, not a second copy of the base

    ids, mask = inputs(tokenizer)
    with torch.no_grad():
        expected = policy.response_outputs(ids, mask, 3)
        loaded = PolicyWithValueHead.from_pretrained(str(tmp_path / "policy"), lora=LoraSettings(r=2))
        got = loaded.response_outputs(ids, mask, 3)
        merged = response_logits(load_causal_lm(str(tmp_path / "policy")), ids, mask, 3)
        # continuing from saved adapters: they are merged in, so π_ref is the saved policy itself
        ref = response_logits(make_reference(loaded), ids, mask, 3)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-5)  # merged vs separate adapters: float rounding
    torch.testing.assert_close(merged, expected[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(ref, got[0], rtol=0, atol=1e-6)
    assert loaded.adapters is not None and any(p.requires_grad for n, p in loaded.named_parameters() if "lora_" in n)
    assert loaded.base[0] == str(tmp_path / "policy")  # its own adapters would save on top of the merged one


@pytest.mark.parametrize(
    "settings, message",
    [
        (LoraSettings(r=-1), "policy.lora.r: got -1"),
        (LoraSettings(r=4, alpha=0), "policy.lora.alpha: got 0"),
        (LoraSettings(r=4, dropout=1.5), "policy.lora.dropout: got 1.5"),
        (LoraSettings(r=4, target_modules=["attn_q"]), r"policy.lora.target_modules: got \['attn_q'\]; expected names"),
    ],
)
def test_bad_lora_settings_are_one_line_errors(tokenizer, settings, message):
    with pytest.raises(TextRLError, match=message) as e:
        add_lora(make_policy(tokenizer).lm, settings)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tinystories():
    if not (TINYSTORIES / "config.json").is_file():
        pytest.skip(f"TinyStories-656K not found at {TINYSTORIES}")
    return str(TINYSTORIES)


def test_reference_equals_the_real_base_model_after_a_ppo_update(tinystories):
    from textrl.algorithms import PPO
    from textrl.policies import load_tokenizer

    tokenizer = load_tokenizer(tinystories)
    policy = PolicyWithValueHead.from_pretrained(tinystories, tokenizer=tokenizer, lora=LoraSettings(r=4))
    reference = make_reference(policy)
    env = TokenGenVectorEnv(
        tokenizer,
        ["Once upon a time", "The little dog"],
        length_reward,
        num_envs=8,
        max_new_tokens=12,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    collector = RolloutCollector(env, policy, reference, SamplingConfig(), seed=0)
    algo = PPO(lr=1e-2, epochs=2, minibatch_size=4)
    algo.setup(policy, reference)
    metrics = algo.update(collector.collect())
    assert all(math.isfinite(v) for v in metrics.values())

    batch = collector.collect()
    base = load_causal_lm(tinystories, tokenizer=tokenizer).eval()
    with torch.no_grad():
        T = batch.response_length
        base_logits = response_logits(base, batch.input_ids, batch.attention_mask, T)
        policy_logits = policy.response_outputs(batch.input_ids, batch.attention_mask, T)[0]
    base_logprobs = torch.log_softmax(base_logits, -1).gather(-1, batch.response_ids[..., None])[..., 0]
    torch.testing.assert_close(batch.ref_logprobs, base_logprobs * batch.action_mask, rtol=0, atol=1e-4)
    assert (policy_logits - base_logits).abs().max() > 1e-3  # the update moved the policy, not π_ref
