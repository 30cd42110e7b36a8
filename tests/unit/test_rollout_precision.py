"""Rollouts under bf16 autocast (trainer.precision=bf16), on the CPU: both decode engines run the
trunk's matmuls on a bfloat16 copy of the weights refreshed once per batch
(:mod:`textrl.rollout.rollout_weights`), so no token step casts a weight; the compiled engine's static
cache holds one dtype; a collector whose autocast state changes between batches gets an engine per
state; the compiled engine draws what the eager engine draws.

The compiled engine compiles with ``aot_eager`` here (dynamo capture and AOT functionalisation,
where autocast's casts become explicit ops that a test can count).
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch.utils._python_dispatch import TorchDispatchMode

from textrl.envs import TokenGenVectorEnv
from textrl.policies import SamplingConfig, frozen_reference
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.lora import LoraSettings, add_lora
from textrl.rollout.collector import RolloutCollector
from textrl.rollout.engines import CompiledEngine, EagerEngine

from conftest import length_reward, make_policy

PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park and"]
BF16 = torch.bfloat16
# measured between the engines under bf16 on this model: log-probs ≤ 9e-4; values one bf16 rounding
# step (2^-7 relative) while the value head's output is bfloat16; the tolerance on values is relative
LOGP_TOL, VALUE_TOL = 4e-3, 2 * 2**-7


def make_collector(tokenizer, policy, engine, *, steps=12, num_envs=6, backend="aot_eager", stop_on_eos=True):
    env = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=num_envs,
        max_new_tokens=steps,
        max_prompt_tokens=12,
        stop_on_eos=stop_on_eos,
        autoreset_mode="disabled",
    )
    return RolloutCollector(
        env, policy, frozen_reference(policy), SamplingConfig(), seed=3, engine=engine, compile_backend=backend
    )


def collect(collector, precision):
    with torch.autocast("cpu", dtype=BF16, enabled=precision == "bf16"):
        return collector.collect()


def assert_close(a, b, logp_tol, value_tol, names=("logprobs", "untruncated_logprobs", "ref_logprobs")):
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.action_mask, b.action_mask)
    for name in names:
        assert (getattr(a, name) - getattr(b, name)).abs().max() <= logp_tol, name
    if value_tol is not None:
        assert ((a.values - b.values).abs() <= value_tol * (1 + a.values.abs())).all()


def lora_policy(tokenizer):
    policy = PolicyWithValueHead(add_lora(make_policy(tokenizer).lm, LoraSettings(r=4, alpha=8))).eval()
    torch.nn.init.normal_(policy.value_head.summary.weight, std=0.5)
    for name, p in policy.named_parameters():
        if "lora_B" in name:  # nonzero adapters, so they change the logits
            torch.nn.init.normal_(p, std=0.2)
    return policy


@pytest.mark.parametrize("lora", [False, True])
def test_compiled_engine_under_bf16_draws_what_the_eager_engine_draws(tokenizer, lora):
    policy = lora_policy(tokenizer) if lora else make_policy(tokenizer)
    eager, compiled = make_collector(tokenizer, policy, "eager"), make_collector(tokenizer, policy, "compiled")
    for _ in range(2):  # the second batch reuses the engine, its static cache and its graph
        assert_close(collect(eager, "bf16"), collect(compiled, "bf16"), LOGP_TOL, VALUE_TOL)
    engine = compiled.engine
    assert isinstance(engine, CompiledEngine) and engine.precision == BF16
    assert {(layer.keys.dtype, layer.values.dtype) for layer in engine.cache.layers} == {(BF16, BF16)}
    # the trunk's matmuls read the bf16 copy; the heads and embeddings are the float32 masters themselves
    copy = engine.policy
    assert copy is not policy and copy.lm.model.layers[0].mlp.down_proj.weight.dtype == BF16
    assert copy.value_head.summary.weight is policy.value_head.summary.weight
    assert copy.lm.get_output_embeddings().weight is policy.lm.get_output_embeddings().weight
    assert all(p.dtype == torch.float32 for p in policy.parameters())


def test_an_engine_per_precision_survives_precision_changes(tokenizer, policy):
    compiled = make_collector(tokenizer, policy, "compiled")
    eager = make_collector(tokenizer, policy, "eager")
    engines = []
    for precision in ("bf16", "fp32", "bf16", "fp32"):
        b, a = collect(compiled, precision), collect(eager, precision)
        if precision == "fp32":
            assert_close(a, b, 1e-4, 1e-4)
        else:
            assert_close(a, b, LOGP_TOL, VALUE_TOL)
        engines.append(compiled.engine)
        dtype = BF16 if precision == "bf16" else torch.float32
        assert {layer.keys.dtype for layer in compiled.engine.cache.layers} == {dtype}
    assert engines[0] is engines[2] and engines[1] is engines[3] and engines[0] is not engines[1]
    assert engines[1].weights is None and engines[1].policy is policy  # fp32: the masters themselves


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_rollout_weights_follow_the_optimizer(tokenizer, policy, engine):
    """An in-place change of the float32 masters (what ``optimizer.step`` does) reaches the next
    batch's bf16 rollout: its log-probs are those of a fresh engine on the new weights."""
    collector = make_collector(tokenizer, policy, engine)
    collect(collector, "bf16")
    with torch.no_grad():
        for p in policy.lm.model.layers.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    fresh = make_collector(tokenizer, policy, "eager")
    collect(fresh, "bf16")  # same number of draws from the same seed as `collector`
    # π_ref differs (each collector's frozen reference is the policy it was made with); values are
    # not compared: on these perturbed weights bf16 rounding alone moves them by up to 3 %
    assert_close(collect(fresh, "bf16"), collect(collector, "bf16"), LOGP_TOL, None, names=("logprobs",))


class ParameterCasts(TorchDispatchMode):
    """Counts dtype casts (``aten._to_copy``) whose input is one of ``params``."""

    def __init__(self, params):
        super().__init__()
        self.ptrs = {p.data_ptr() for p in params}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.ptrs:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("lora", [False, True])
def test_eager_bf16_rollout_casts_no_weight_per_token_step(tokenizer, lora):
    """Casts of the decoder layers' weights in a 12-step batch minus a 6-step batch: 0, for a full
    policy and for LoRA (whose frozen base weights autocast alone would re-cast at every step).
    (The LM head is float32 by the mixed-precision policy and not counted here.)"""
    policy = lora_policy(tokenizer) if lora else make_policy(tokenizer)
    counts = []
    for steps in (6, 12):
        collector = make_collector(tokenizer, policy, "eager", steps=steps, stop_on_eos=False)
        collect(collector, "bf16")
        with ParameterCasts(policy.lm.model.layers.parameters()) as casts:
            batch = collect(collector, "bf16")
        assert batch.response_length == steps
        counts.append(casts.count)
    assert counts[1] - counts[0] == 0, counts
    assert isinstance(collector.engine, EagerEngine) and collector.engine.weights is not None


def test_compiled_bf16_step_casts_no_weight(tokenizer, policy):
    """The compiled token step's graph (autocast's casts made explicit by AOT tracing) casts no
    float32 decoder-layer weight to bf16; the same step on the float32 masters would cast every
    one of them (checked by running it on a copy-less engine). The LM and value heads are float32
    by the mixed-precision policy and not counted here."""
    trunk_shapes = {tuple(p.shape) for p in policy.lm.model.layers.parameters() if p.dim() == 2}
    assert trunk_shapes.isdisjoint({(len(tokenizer), 32), (1, 32)})  # the heads' shapes

    def casts_in_graph(engine_policy):
        found = collections.Counter()

        def forward_compiler(gm, example_inputs):
            for node in gm.graph.nodes:
                if node.op == "call_function" and node.target in (
                    torch.ops.aten._to_copy.default,
                    torch.ops.prims.convert_element_type.default,
                ):
                    source = node.args[0]
                    dtype = node.kwargs.get("dtype", node.args[1] if len(node.args) > 1 else None)
                    val = source.meta.get("val") if source.op == "placeholder" else None
                    trunk = val is not None and tuple(val.shape) in trunk_shapes
                    if trunk and val.dtype == torch.float32 and dtype == BF16:
                        found[tuple(val.shape)] += 1
            return gm.forward

        collector = make_collector(
            tokenizer, engine_policy, "compiled", backend=aot_autograd(fw_compiler=forward_compiler), steps=4
        )
        collect(collector, "bf16")
        return collector, found

    collector, found = casts_in_graph(policy)
    assert collector.engine.weights is not None and collector.engine.failure is None
    assert sum(found.values()) == 0, found
    # control: without the copy (weights patched out) the graph casts the 7 matmul weights of each layer
    import textrl.rollout.engines as engines

    original = engines.needs_rollout_weights
    engines.needs_rollout_weights = lambda *args: False
    try:
        collector, found = casts_in_graph(policy)
    finally:
        engines.needs_rollout_weights = original
    assert collector.engine.weights is None and sum(found.values()) >= 7 * len(policy.lm.model.layers), found
