"""One PPO update, broken down: generate / score / reference / train time and tokens/s, and peak
memory of full fine-tuning against LoRA with the adapter-disabled reference.

Usage: ``python tests/benchmarks/ppo_update.py [--models tinystories gpt2-small] [--batch-size 16]
[--new-tokens 32] [--repeats 3] [--device cpu|cuda] [--precision fp32|bf16] [--no-memory]``

Phases of one update (median of ``--repeats`` after a warm-up), all measured in this run:

- generate: the rollout through the vector env with the KV cache (policy logits *and* values come
  from the same forward pass, so there is no separate value pass);
- score: the reward model's calls (VADER here);
- reference: the teacher-forced π_ref pass for the KL penalty (one pass per batch);
- train: ``algo.epochs`` passes of minibatch forward/backward/AdamW steps.

Memory (``--no-memory`` skips it): each configuration runs in a fresh process that loads the
policy, builds π_ref and runs one update; peak RSS (``VmHWM``, including torch itself) on CPU,
``torch.cuda.max_memory_allocated`` on CUDA. Prints tables and, last, ``lora_vs_full_peak_memory=<ratio>`` for the largest model.
``--memory-controls`` prints, instead of the LoRA table, full fine-tuning with ``algo.micro_batch_size`` = a quarter
of the minibatch (also the π_ref chunk), with ``policy.gradient_checkpointing``, and with both,
against the plain update, and ``micro_batch_peak_memory=<ratio>``; ``--no-timing`` skips the
phase table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs_page, beside this script

from docs_page import add_docs_argument, as_markdown, record_output, write_page  # noqa: E402

import torch  # noqa: E402

from textrl.algorithms import PPO  # noqa: E402
from textrl.precision import autocast  # noqa: E402
from textrl.envs import TokenGenVectorEnv, builtin_prompts  # noqa: E402
from textrl.policies import LoraSettings, PolicyWithValueHead, SamplingConfig, make_reference  # noqa: E402
from textrl.policies.lora import add_lora  # noqa: E402
from textrl.rewards import SentimentReward  # noqa: E402
from textrl.rollout.collector import RolloutCollector  # noqa: E402

_REPO = Path(__file__).resolve().parents[2]
# $TEXTRL_ASSETS, else ../shared/assets beside the repo, else the repo's ignored .assets/ (see gpu_check.sh)
ASSETS = Path(
    os.environ.get("TEXTRL_ASSETS")
    or next(
        (p for p in (_REPO.parent / "shared" / "assets", _REPO / ".assets") if (p / "tinystories-656k").is_dir()),
        _REPO.parent / "shared" / "assets",
    )
)


def load(name: str, device, lora_rank: int):
    """``(tokenizer, policy)``: TinyStories-656K (real) or a GPT-2-small-shaped random model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tinystories-656k")
    torch.manual_seed(0)
    if name == "tinystories":
        lm = AutoModelForCausalLM.from_pretrained(ASSETS / "tinystories-656k", dtype=torch.float32)
        targets = None
    elif name == "gpt2-small":
        lm = GPT2LMHeadModel(
            GPT2Config(
                n_layer=12, n_embd=768, n_head=12, vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
            )
        )  # RL runs with dropout 0
        targets = ["c_attn"]
    else:
        raise SystemExit(f"unknown model {name!r}; expected tinystories or gpt2-small")
    lm.config.pad_token_id = tokenizer.pad_token_id
    if lora_rank:
        lm = add_lora(lm, LoraSettings(r=lora_rank, alpha=2 * lora_rank, target_modules=targets))
    return tokenizer, PolicyWithValueHead(lm).to(device).eval()  # as RL runs it (no dropout, KV-cached rollouts)


def forward_under_autocast(policy: PolicyWithValueHead, device, precision: str) -> None:
    """Run every forward pass of ``policy`` in an autocast region of its own (``precision``), so
    autocast wraps forward passes only and no cached bf16 cast of a weight outlives an optimizer
    step (which runs outside any region). A class swap, not an instance attribute, so copies of
    the policy (the rollout's bf16 weights) run their own forward the same way."""
    policy.__class__ = type("AutocastPolicy", (type(policy),), {"forward": _autocast_forward})
    policy.autocast_args = (device, precision)


def _autocast_forward(self, *args, **kwargs):
    with autocast(*self.autocast_args):
        return PolicyWithValueHead.forward(self, *args, **kwargs)


class Timed:
    """Wraps a callable (reward model) or module (π_ref) and adds up the seconds spent in it."""

    def __init__(self, inner, device):
        self.inner, self.device, self.seconds = inner, device, 0.0

    def __call__(self, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_update(name, args, device, lora_rank=0, micro=None, checkpointing=False):
    """Build everything, run one warm-up update, then time ``args.repeats`` updates phase by phase."""
    tokenizer, policy = load(name, device, lora_rank)
    if checkpointing:
        policy.enable_gradient_checkpointing()
    reference = make_reference(policy)
    reward = Timed(SentimentReward(backend="vader"), device)
    timed_ref = Timed(reference, device)
    env = TokenGenVectorEnv(
        tokenizer,
        builtin_prompts(),
        reward,
        num_envs=args.batch_size,
        max_new_tokens=args.new_tokens,
        max_prompt_tokens=24,
        stop_on_eos=False,
        device=device,
        autoreset_mode="disabled",
    )
    collector = RolloutCollector(env, policy, timed_ref, SamplingConfig(), seed=0, chunk_size=micro)
    forward_under_autocast(policy, device, args.precision)
    algo = PPO(lr=1e-5, epochs=args.epochs, minibatch_size=args.minibatch_size, micro_batch_size=micro)
    algo.setup(policy, reference)
    rows = []
    for i in range(args.repeats + 1):
        reward.seconds = timed_ref.seconds = 0.0
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, args.precision):  # the rollout: forward passes only
            batch = collector.collect()
        sync(device)
        t1 = time.perf_counter()
        algo.update(batch)  # its forward passes under autocast (forward_under_autocast), its optimizer steps outside
        sync(device)
        t2 = time.perf_counter()
        if i:  # the first update warms up
            rollout = t1 - t0
            rows.append(
                {
                    "generate": rollout - reward.seconds - timed_ref.seconds,
                    "score": reward.seconds,
                    "reference": timed_ref.seconds,
                    "train": t2 - t1,
                    "tokens": float(batch.action_mask.sum()),
                }
            )
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def peak_memory_child(name, args, device, setting: str) -> None:
    """Run in a fresh process: one update, then print the peak memory in MiB as JSON.
    ``setting`` is ``"<lora rank>,<micro-batch size or 0>,<checkpointing 0|1>"``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    args.repeats = 1
    lora_rank, micro, checkpointing = (int(x) for x in setting.split(","))
    one_update(name, args, device, lora_rank, micro or None, bool(checkpointing))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # VmHWM: this process's peak RSS (ru_maxrss would carry over the parent's peak through exec)
        status = Path("/proc/self/status").read_text()
        peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
    print(json.dumps({"peak_mib": peak}))


def peak_memory(name, args, lora_rank, micro=0, checkpointing=False) -> float:
    cmd = [
        sys.executable,
        __file__,
        "--models",
        name,
        "--batch-size",
        str(args.batch_size),
        "--new-tokens",
        str(args.new_tokens),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--epochs",
        str(args.epochs),
        "--minibatch-size",
        str(args.minibatch_size),
        "--memory-child",
        f"{lora_rank},{micro},{int(checkpointing)}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tinystories", "gpt2-small"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-controls", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    add_docs_argument(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory_child is not None:
        return peak_memory_child(args.models[0], args, device, args.memory_child)

    if not args.write_docs:
        return measure(args)
    with record_output() as printed:
        measure(args)
    write_page(
        "ppo-update",
        title="One PPO update: phases and peak memory",
        tables=[as_markdown(printed.text)],
        notes="One PPO update broken into its phases (median of the repeats after a warm-up): the rollout "
        "(generate), the reward calls (score), the teacher-forced π_ref pass (reference) and the "
        "minibatch forward/backward/AdamW steps (train). Peak memory: each configuration in a fresh "
        "process (peak RSS on CPU, `torch.cuda.max_memory_allocated` on CUDA).",
    )


def measure(args) -> None:
    """Run the measurements of :func:`main` and print them."""
    device = torch.device(args.device)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} precision={args.precision} "
        f"batch={args.batch_size} new_tokens={args.new_tokens} epochs={args.epochs} "
        f"minibatch={args.minibatch_size} repeats={args.repeats} (median)"
    )
    if not args.no_timing:
        print("| model | generate s | score s | reference s | train s | update s | generate share | update tok/s |")
        print("|---|---|---|---|---|---|---|---|")
    for name in [] if args.no_timing else args.models:
        r = one_update(name, args, device)
        total = r["generate"] + r["score"] + r["reference"] + r["train"]
        print(
            f"| {name} | {r['generate']:.3f} | {r['score']:.3f} | {r['reference']:.3f} | {r['train']:.3f} "
            f"| {total:.3f} | {r['generate'] / total:.2f} | {r['tokens'] / total:.0f} |"
        )
    if args.no_memory:
        return
    if args.memory_controls:
        micro = max(1, args.minibatch_size // 4)
        print(
            f"\n| model | minibatch {args.minibatch_size} in one pass MiB | micro-batch {micro} MiB "
            f"| gradient checkpointing MiB | both MiB | micro-batch ratio |"
        )
        print("|---|---|---|---|---|---|")
        for name in args.models:
            plain, split = peak_memory(name, args, 0), peak_memory(name, args, 0, micro)
            checkpointed, both = peak_memory(name, args, 0, 0, True), peak_memory(name, args, 0, micro, True)
            print(f"| {name} | {plain:.0f} | {split:.0f} | {checkpointed:.0f} | {both:.0f} | {split / plain:.2f} |")
        print(f"micro_batch_peak_memory={split / plain:.2f}")
        return
    print(f"\n| model | full fine-tuning peak MiB | LoRA r={args.lora_rank} peak MiB | ratio |")
    print("|---|---|---|---|")
    ratio = None
    for name in args.models:
        full, lora = peak_memory(name, args, 0), peak_memory(name, args, args.lora_rank)
        ratio = lora / full
        print(f"| {name} | {full:.0f} | {lora:.0f} | {ratio:.2f} |")
    print(f"lora_vs_full_peak_memory={ratio:.2f}")


if __name__ == "__main__":
    main()
