"""The bf16 rollout copy's trade-off (textrl.rollout.precision), measured on a random Llama.

Usage: ``python tests/benchmarks/rollout_precision.py [--device cpu] [--backend aot_eager] [--hidden 256]
[--layers 4] [--batch 8] [--repeats 5]``

Under bf16 autocast with float32 master weights, per engine (eager; compiled with ``--backend``):
the time of a token step with the bf16 trunk copy (:class:`RolloutWeights`) and without it (autocast
casting the float32 weights: once per ``collect()`` for trainable weights in the eager engine, at
every step in the compiled one), from a 32- minus a 16-token rollout ÷ 16 (median of ``--repeats``);
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
from textrl.rollout.precision import RolloutWeights  # noqa: E402

from rollout import byte_tokenizer  # noqa: E402  (tests/benchmarks is the script's directory)


def zero_reward(prompts, responses):
    return torch.zeros(len(responses))


def step_seconds(policy, tokenizer, engine, backend, batch, repeats, device) -> float:
    """Seconds per token step: (32-token rollout − 16-token rollout) / 16, medians, bf16 autocast."""
    times = {}
    for steps in (16, 32):
        env = TokenGenVectorEnv(tokenizer, builtin_prompts()[:batch], zero_reward, num_envs=batch,
                                max_new_tokens=steps, max_prompt_tokens=16, stop_on_eos=False, device=device,
                                autoreset_mode="disabled")
        collector = RolloutCollector(env, policy, None, SamplingConfig(), seed=0, engine=engine, compile_backend=backend)
        runs = []
        for i in range(repeats + 1):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                start = time.perf_counter()
                collector.collect()
                runs.append(time.perf_counter() - start)
        times[steps] = statistics.median(runs[1:])  # the first compiles / warms up
    return (times[32] - times[16]) / 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="aot_eager")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                                      intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      pad_token_id=tokenizer.pad_token_id))
    policy = PolicyWithValueHead(lm).to(device).eval()
    weights = RolloutWeights(policy, torch.bfloat16)
    weights.refresh()
    start = time.perf_counter()
    for _ in range(10):
        weights.refresh()
    refresh = (time.perf_counter() - start) / 10
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} hidden={args.hidden} "
          f"layers={args.layers} batch={args.batch} backend={args.backend}")
    print(f"copy: {weights.numel} parameters, {weights.numel * 2 / 2**20:.1f} MiB; refresh {refresh * 1e3:.2f} ms "
          f"per collect()")
    print("| engine | step ms, bf16 copy | step ms, autocast casts the fp32 weights | ratio |")
    print("|---|---|---|---|")
    for engine in ("eager", "compiled"):
        with_copy = step_seconds(policy, tokenizer, engine, args.backend, args.batch, args.repeats, device)
        original = engines.needs_rollout_weights
        engines.needs_rollout_weights = lambda *a: False
        try:
            without = step_seconds(policy, tokenizer, engine, args.backend, args.batch, args.repeats, device)
        finally:
            engines.needs_rollout_weights = original
        print(f"| {engine} | {with_copy * 1e3:.2f} | {without * 1e3:.2f} | {without / with_copy:.2f} |", flush=True)


if __name__ == "__main__":
    main()
