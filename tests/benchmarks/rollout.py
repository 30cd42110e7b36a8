"""Rollout through TokenGenVectorEnv + KV cache vs ``model.generate``: tokens per second.

Usage: ``python tests/benchmarks/rollout.py [--repeats 3] [--new-tokens 64] [--batch-sizes 8 32]
[--device cpu] [--models tinystories gpt2-small]``

Both sides sample (temperature 1, no top-k/top-p) exactly ``--new-tokens`` tokens per row from
the same model and the same left-padded prompts (EOS stopping off on both sides), so they do the
same model work; the rollout also runs the value head, the env bookkeeping and the reward call.
Prints a table and, last, ``rollout_vs_generate=<lowest ratio>`` (rollout tok/s ÷ generate tok/s,
both measured in this run). The two are timed alternately and the ratio is the median of the
per-pair ratios, so a shared machine's drift does not favour either side. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

from textrl.envs import TokenGenVectorEnv, builtin_prompts  # noqa: E402
from textrl.policies import PolicyWithValueHead, SamplingConfig  # noqa: E402
from textrl.rollout.collector import RolloutCollector  # noqa: E402

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))


def zero_reward(prompts, responses):
    return torch.zeros(len(responses))


def load_model(name: str, device):
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tinystories-656k")
    if name == "tinystories":
        lm = AutoModelForCausalLM.from_pretrained(ASSETS / "tinystories-656k", dtype=torch.float32)
    elif name == "gpt2-small":  # GPT-2-small shape (124M), random weights; prompts use the TinyStories tokenizer
        torch.manual_seed(0)
        lm = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257))
    else:
        raise SystemExit(f"unknown model {name!r}; expected tinystories or gpt2-small")
    lm.generation_config.eos_token_id = None  # both sides generate exactly --new-tokens tokens
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, lm.to(device).eval()


def seconds(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed_pairs(first, second, repeats: int, device) -> tuple[list[float], list[float]]:
    """Time ``first`` and ``second`` alternately ``repeats`` times after a warm-up of each, so
    slow drifts of a shared machine hit both sides alike."""
    first(), second()
    pairs = [(seconds(first, device), seconds(second, device)) for _ in range(repeats)]
    return [a for a, _ in pairs], [b for _, b in pairs]


def bench(name: str, batch_size: int, new_tokens: int, repeats: int, device) -> dict:
    tokenizer, lm = load_model(name, device)
    policy = PolicyWithValueHead(lm).to(device).eval()
    prompts = builtin_prompts()[:batch_size]
    env = TokenGenVectorEnv(tokenizer, prompts, zero_reward, num_envs=batch_size, max_new_tokens=new_tokens,
                            max_prompt_tokens=24, vocab_size=lm.config.vocab_size, stop_on_eos=False, device=device,
                            autoreset_mode="disabled")
    collector = RolloutCollector(env, policy, None, SamplingConfig(), seed=0)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", truncation=True,
                    max_length=24).to(device)

    @torch.no_grad()
    def generate():
        lm.generate(**enc, do_sample=True, max_new_tokens=new_tokens, top_k=0, top_p=1.0, temperature=1.0)

    def rollout():
        batch = collector.collect(prompts=prompts)
        assert batch.response_length == new_tokens

    tokens = batch_size * new_tokens
    gen, roll = timed_pairs(generate, rollout, repeats, device)
    return {"model": name, "batch": batch_size, "generate_tok_s": tokens / statistics.median(gen),
            "rollout_tok_s": tokens / statistics.median(roll),
            "ratio": statistics.median(g / r for g, r in zip(gen, roll))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--models", nargs="+", default=["tinystories", "gpt2-small"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [bench(m, b, args.new_tokens, args.repeats, device) for m in args.models for b in args.batch_sizes]
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"new_tokens={args.new_tokens} repeats={args.repeats} (medians; ratio = median of alternating pairs)")
    print(f"| {'model':<12} | {'batch':>5} | {'generate tok/s':>14} | {'rollout tok/s':>13} | {'ratio':>5} |")
    print(f"|{'-' * 14}|{'-' * 7}|{'-' * 16}|{'-' * 15}|{'-' * 7}|")
    for r in rows:
        print(f"| {r['model']:<12} | {r['batch']:>5} | {r['generate_tok_s']:>14.0f} | {r['rollout_tok_s']:>13.0f} "
              f"| {r['ratio']:>5.2f} |")
    print(f"rollout_vs_generate={min(r['ratio'] for r in rows):.2f}")


if __name__ == "__main__":
    main()
