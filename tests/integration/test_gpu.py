"""GPU checks: skipped (with the reason) on a machine without CUDA, run where CUDA exists.

- ``device=auto`` picks CUDA, and every tensor of a rollout stays on the GPU;
- host synchronisations per token step (``torch.cuda.set_sync_debug_mode``, a 12-step batch minus
  a 6-step batch, ÷ 6, so the batch's setup and trimming cancel out): the compiled engine at most
  one (the env's "any episode ended?" check); the eager engine at most three (that one and the
  two that transformers' attention-mask code makes at every forward pass of a left-padded batch,
  checking the mask for padding);
- the compiled engine (static cache, inductor + CUDA graphs) draws the eager engine's tokens,
  log-probs and values (non-zero value head), for a full and a LoRA policy, batch after batch, in
  float32 and under bf16 autocast (the tolerances measured on the CPU, tests/test_rollout_precision.py);
- bf16 autocast trains through the CLI with finite metrics (PPO update, compiled engine: ``auto``
  resolves to ``compiled`` on CUDA), and a LoRA run works on the GPU.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from conftest import fast, length_reward, make_policy, read_jsonl, textrl
from textrl.devices import resolve_device
from textrl.policies.lora import LoraSettings, add_lora
from textrl.policies.policy import PolicyWithValueHead
from textrl.rollout.engines import CompiledEngine
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.policies import SamplingConfig, make_reference
from textrl.rollout.collector import RolloutCollector

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def gpu_rollout(tokenizer, steps=6, batch=8, engine="eager", policy=None, stop_on_eos=False):
    policy = policy if policy is not None else make_policy(tokenizer).to("cuda")
    env = TokenGenVectorEnv(
        tokenizer,
        ["the movie was", "a dog ran", "happy"],
        length_reward,
        num_envs=batch,
        max_new_tokens=steps,
        max_prompt_tokens=6,
        device="cuda",
        stop_on_eos=stop_on_eos,
        autoreset_mode="disabled",
    )
    return RolloutCollector(env, policy, make_reference(policy), SamplingConfig(), seed=0, engine=engine)


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


def test_rollout_tensors_stay_on_the_gpu(tokenizer):
    batch = gpu_rollout(tokenizer).collect()
    for name in (
        "input_ids",
        "attention_mask",
        "action_mask",
        "logprobs",
        "ref_logprobs",
        "values",
        "rewards",
        "scores",
    ):
        assert getattr(batch, name).device.type == "cuda", name


@pytest.mark.parametrize("lora", [False, True])
def test_compiled_engine_draws_what_the_eager_engine_draws(tokenizer, lora):
    lm = make_policy(tokenizer).lm
    policy = PolicyWithValueHead(add_lora(lm, LoraSettings(r=4, alpha=8)) if lora else lm).to("cuda").eval()
    torch.nn.init.normal_(policy.value_head.summary.weight, std=0.5)  # non-zero values to compare
    for name, p in policy.named_parameters():
        if "lora_B" in name:  # nonzero adapters, so they change the logits
            torch.nn.init.normal_(p, std=0.2)
    eager = gpu_rollout(tokenizer, steps=10, engine="eager", policy=policy, stop_on_eos=True)
    compiled = gpu_rollout(tokenizer, steps=10, engine="compiled", policy=policy, stop_on_eos=True)
    for _ in range(3):  # the static cache and the CUDA graph are reused batch after batch
        a, b = eager.collect(), compiled.collect()
        assert torch.equal(a.input_ids, b.input_ids)
        for name in ("logprobs", "untruncated_logprobs", "values", "ref_logprobs"):
            assert (getattr(a, name) - getattr(b, name)).abs().max() <= 1e-4, name
        assert b.values.abs().max() > 0
    assert isinstance(compiled.engine, CompiledEngine) and compiled.engine.mask.device.type == "cuda"
    assert compiled.engine.failure is None


def test_compiled_engine_under_bf16_autocast(tokenizer):
    policy = make_policy(tokenizer).to("cuda")
    eager = gpu_rollout(tokenizer, steps=10, engine="eager", policy=policy, stop_on_eos=True)
    compiled = gpu_rollout(tokenizer, steps=10, engine="compiled", policy=policy, stop_on_eos=True)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a, b = eager.collect(), compiled.collect()
        assert torch.equal(a.input_ids, b.input_ids)
        for name in ("logprobs", "untruncated_logprobs", "ref_logprobs"):
            assert (getattr(a, name) - getattr(b, name)).abs().max() <= 4e-3, name
        assert ((a.values - b.values).abs() <= 2 * 2**-7 * (1 + a.values.abs())).all()
    engine = compiled.engine
    assert engine.failure is None and engine.weights is not None
    assert {(layer.keys.dtype, layer.values.dtype) for layer in engine.cache.layers} == {(torch.bfloat16,) * 2}
    b = compiled.collect()  # float32 now: an engine of its own
    assert compiled.engine is not engine and compiled.engine.cache.layers[0].keys.dtype == torch.float32


def host_syncs(collector) -> int:
    """Host synchronisations of one ``collect()`` (after two warm-up batches: first CUDA calls,
    allocator, compilation and graph capture)."""
    collector.collect()
    collector.collect()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            collector.collect()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


# per token step: the env's one check, plus (eager only) transformers' two padding-mask checks
SYNCS_PER_STEP = {"compiled": 1, "eager": 3}


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_host_syncs_per_token_step(tokenizer, engine):
    policy = make_policy(tokenizer).to("cuda")  # non-zero value head (conftest)
    counts = {steps: host_syncs(gpu_rollout(tokenizer, steps=steps, engine=engine, policy=policy)) for steps in (6, 12)}
    per_step = (counts[12] - counts[6]) / 6
    print(f"host syncs {engine}: 6-step batch {counts[6]}, 12-step batch {counts[12]}, per step {per_step:.2f}")
    assert per_step <= SYNCS_PER_STEP[engine], counts


def test_bf16_training_through_the_cli(assets, tmp_path):
    out = tmp_path / "run"
    result = textrl(*fast(out, "device=cuda", "trainer.precision=bf16", "trainer.updates=3", "rollout.engine=compiled"))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 3 and all(math.isfinite(r["loss/policy"]) for r in records)


def test_lora_on_the_gpu(assets, tmp_path):
    out = tmp_path / "run"
    result = textrl(*fast(out, "device=cuda", "policy.lora.r=4", "trainer.updates=2", "rollout.engine=compiled"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "policy" / "adapter_model.safetensors").is_file()
