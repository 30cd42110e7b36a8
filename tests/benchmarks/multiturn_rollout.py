"""Multi-turn rollout throughput against a single-turn rollout of the same total length.

Usage: ``python tests/benchmarks/multiturn_rollout.py [--repeats 3] [--tokens 64] [--batch-size 8]
[--env-tokens 8] [--device cpu]``

TinyStories-656K, eager engine, EOS off on both sides. Single-turn: ``--tokens`` sampled tokens per
row. Multi-turn: the same ``env.max_episode_tokens = --tokens`` budget, a policy turn ending at
each ``"."`` and the interaction appending ``--env-tokens`` ids each time (ragged KV-cache extends
on those steps), until the budget truncates the episode. Tokens/s counts every token after the
prompt (policy and env); timed alternately, ratio = median of per-pair ratios (target ≥ 0.9).
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs_page, beside this script

from docs_page import add_docs_argument, as_markdown, record_output, write_page  # noqa: E402

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import textrl  # noqa: E402
from textrl.envs import TokenGenVectorEnv  # noqa: E402
from textrl.policies import PolicyWithValueHead  # noqa: E402
from textrl.policies.sampling import SamplingConfig  # noqa: E402
from textrl.rollout.collector import RolloutCollector  # noqa: E402

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))
PROMPTS = ["Once upon a time", "Tom had a red ball", "The sun was hot", "Lily saw a big dog"]


class Narrator(textrl.Interaction):
    """Ends a policy turn at ``"."`` and appends ``k`` fixed ids."""

    stop_strings = (".",)

    def __init__(self, k: int):
        self.k = k

    def respond(self, episode):
        ids = self.message_ids("And then the little girl said that", role="user")
        return textrl.Reply.append((ids * self.k)[: self.k])


def zero_reward(prompts, responses):
    return torch.zeros(len(responses))


def run(collector) -> tuple[int, float]:
    start = time.perf_counter()
    batch = collector.collect(prompts=[PROMPTS[i % len(PROMPTS)] for i in range(collector.env.num_envs)])
    if batch.input_ids.is_cuda:
        torch.cuda.synchronize()
    tokens = int(batch.attention_mask[:, -batch.response_length :].sum())
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--env-tokens", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    add_docs_argument(parser)
    args = parser.parse_args()

    if not args.write_docs:
        return measure(args)
    with record_output() as printed:
        measure(args)
    write_page(
        "multiturn-rollout",
        title="Multi-turn rollout throughput",
        tables=[as_markdown(printed.text)],
        notes=f"TinyStories-656K, eager engine, batch {args.batch_size}, {args.tokens} tokens after the prompt. "
        f"Multi-turn: a policy turn ends at each `.` and the interaction appends {args.env_tokens} ids "
        "(ragged KV-cache extends); single-turn: the same number of sampled tokens. Tokens/s counts "
        "policy and env tokens; `multiturn_vs_singleturn` is the median of per-pair ratios (target ≥ 0.9).",
    )


def measure(args) -> None:
    """Run the measurements of :func:`main` and print them."""
    path = ASSETS / "tinystories-656k"
    tok = AutoTokenizer.from_pretrained(path)
    policy = PolicyWithValueHead.from_pretrained(str(path), tokenizer=tok, device=args.device).eval()
    common = dict(
        num_envs=args.batch_size, max_prompt_tokens=16, autoreset_mode="disabled", stop_on_eos=False, device=args.device
    )
    single = TokenGenVectorEnv(tok, PROMPTS, zero_reward, max_new_tokens=args.tokens, copy=False, **common)
    multi = TokenGenVectorEnv(
        tok,
        PROMPTS,
        zero_reward,
        max_new_tokens=args.tokens,
        interaction=Narrator(args.env_tokens),
        max_turns=10**6,
        max_episode_tokens=args.tokens,
        copy=False,
        **common,
    )
    collectors = {
        name: RolloutCollector(env, policy, None, SamplingConfig(), seed=0, engine="eager")
        for name, env in (("single", single), ("multi", multi))
    }
    for c in collectors.values():
        run(c)  # warm-up
    rates = {"single": [], "multi": []}
    counts = {"single": [], "multi": []}
    for _ in range(args.repeats):
        for name, c in collectors.items():
            tokens, seconds = run(c)
            rates[name].append(tokens / seconds)
            counts[name].append(tokens)
    ratio = statistics.median(m / s for m, s in zip(rates["multi"], rates["single"]))
    for name in rates:
        print(
            f"{name:7s} tokens/batch {statistics.median(counts[name]):7.0f}  tokens/s {statistics.median(rates[name]):9.1f}"
        )
    print(f"multiturn_vs_singleturn={ratio:.3f}")


if __name__ == "__main__":
    main()
