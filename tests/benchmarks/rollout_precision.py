"""The bf16 rollout copy's trade-off (textrl.rollout.rollout_weights), measured on a random Llama.

Usage: ``python tests/benchmarks/rollout_precision.py [--device cpu] [--backend aot_eager] [--hidden 128]
[--layers 2] [--batch 8] [--repeats 3]``

Under bf16 autocast with float32 master weights, per engine (eager; compiled with ``--backend``):
the time of a token step with the bf16 trunk copy (:class:`RolloutWeights`) and without it (autocast
casting the float32 weights: once per ``collect()`` for trainable weights in the eager engine, at
every step in the compiled one), from a 16- minus an 8-token rollout ÷ 8 (medians of ``--repeats`` rounds);
the time of one :meth:`RolloutWeights.refresh` (once per ``collect()``) and the copy's bytes.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import textrl.rollout.engines as engines  # noqa: E402
from textrl.envs import TokenGenVectorEnv, builtin_prompts  # noqa: E402
from textrl.policies import PolicyWithValueHead, SamplingConfig  # noqa: E402
from textrl.rollout.collector import RolloutCollector  # noqa: E402
from textrl.rollout.rollout_weights import RolloutWeights  # noqa: E402

from rollout import byte_tokenizer  # noqa: E402  (tests/benchmarks is the script's directory)


def zero_reward(prompts, responses):
    return torch.zeros(len(responses))


def collector_for(policy, tokenizer, engine, backend, batch, steps, device, copy: bool) -> RolloutCollector:
    """A collector whose engine (made here, at a first bf16 batch) has the bf16 copy or not."""
    env = TokenGenVectorEnv(
        tokenizer,
        builtin_prompts()[:batch],
        zero_reward,
        num_envs=batch,
        max_new_tokens=steps,
        max_prompt_tokens=16,
        stop_on_eos=False,
        device=device,
        autoreset_mode="disabled",
    )
    collector = RolloutCollector(env, policy, None, SamplingConfig(), seed=0, engine=engine, compile_backend=backend)
    original = engines.needs_rollout_weights
    if not copy:
        engines.needs_rollout_weights = lambda *a: False
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            collector.collect()  # makes the engine (and compiles)
    finally:
        engines.needs_rollout_weights = original
    assert (collector.engine.weights is not None) == copy
    return collector


def step_ms(policy, tokenizer, engine, backend, batch, repeats, device, short=8, long=16) -> dict:
    """Milliseconds per token step with and without the copy: (long − short rollout) / (long − short),
    medians of ``repeats`` rounds that time the four collectors round-robin (drift hits all alike)."""
    collectors = {
        (copy, steps): collector_for(policy, tokenizer, engine, backend, batch, steps, device, copy)
        for copy in (True, False)
        for steps in (short, long)
    }
    times = {key: [] for key in collectors}
    for _ in range(repeats):
        for key, collector in collectors.items():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                start = time.perf_counter()
                collector.collect()
                times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(v) for key, v in times.items()}
    return {copy: 1e3 * (med[(copy, long)] - med[(copy, short)]) / (long - short) for copy in (True, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="aot_eager")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    policy = PolicyWithValueHead(lm).to(device).eval()
    weights = RolloutWeights(policy, torch.bfloat16)
    weights.refresh()
    start = time.perf_counter()
    for _ in range(10):
        weights.refresh()
    refresh = (time.perf_counter() - start) / 10
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} hidden={args.hidden} "
        f"layers={args.layers} batch={args.batch} backend={args.backend}"
    )
    print(
        f"copy: {weights.numel} parameters, {weights.numel * 2 / 2**20:.1f} MiB; refresh {refresh * 1e3:.2f} ms "
        f"per collect()"
    )
    print("| engine | step ms, bf16 copy | step ms, autocast casts the fp32 weights | ratio |")
    print("|---|---|---|---|")
    for engine in ("eager", "compiled"):
        ms = step_ms(policy, tokenizer, engine, args.backend, args.batch, args.repeats, device)
        print(f"| {engine} | {ms[True]:.2f} | {ms[False]:.2f} | {ms[False] / ms[True]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
