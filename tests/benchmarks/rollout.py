"""Rollout through TokenGenVectorEnv + a decode engine vs ``model.generate``: ops per step, tokens/s.

Usage: ``python tests/benchmarks/rollout.py [--repeats 3] [--new-tokens 64] [--batch-sizes 8 32]
[--device cpu] [--models tinystories gpt2-small] [--engines eager] [--skip-ops] [--skip-throughput]``

1. **Ops per token step** (hardware-independent), printed as one line
   ``ops_per_step generate=<g> eager=<e> compiled=<c>`` for TinyStories-656K, batch 8. A step's
   ops are the difference between a 32- and a 16-token run divided by 16, so prefill and batch
   assembly cancel out. On CPU: aten ops dispatched (a ``TorchDispatchMode`` counter); inside the
   compiled engine's graph, which a dispatch mode would disable, the aten calls the compiled code
   makes (top-level ``aten::`` events of ``torch.profiler``; inductor's fused C++ kernels are not
   aten calls). On CUDA: kernel launches, memory copies/sets and CUDA-graph launches issued
   (``torch.profiler`` runtime events), one graph replay counting as one.
2. **Tokens/s** (CPU and CUDA): textrl's engines vs ``model.generate`` on the same model and the
   same left-padded prompts, exactly ``--new-tokens`` sampled tokens per row (EOS off on both
   sides; the rollout also runs the value head, the env bookkeeping and the reward call); timed
   alternately, ratio = median of per-pair ratios, last line ``rollout_vs_generate=<lowest>``.
3. **CUDA only** (``--gpu-table``): bf16, 128 new tokens, batch 16/64/256, SmolLM2-135M's shape and
   a ~1B Llama shape (random weights from a config): tokens/s of textrl eager and compiled, HF
   ``generate`` (dynamic cache) and HF ``generate`` with a static cache + ``torch.compile``, and the
   HBM-bandwidth bound: bytes of weights and KV cache read per step ÷ the bandwidth of a large
   device-to-device copy measured in the same run, with textrl compiled's fraction of it.

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import sys
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs_page, beside this script

from docs_page import add_docs_argument, as_markdown, record_output, write_page  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes  # noqa: E402
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,  # noqa: E402
    LlamaForCausalLM,
)

from textrl.envs import TokenGenVectorEnv, builtin_prompts  # noqa: E402
from textrl.policies import PolicyWithValueHead, SamplingConfig  # noqa: E402
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
PROMPT_TOKENS = 24
# random-init shapes for the GPU table (throughput does not depend on the weights)
SHAPES = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    # --smoke: the same code path on a CPU in seconds
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=258,
        tie_word_embeddings=True,
    ),
}
TABLE_SHAPES = ("smollm2-135m", "llama-1b")
LAUNCHES = (
    "cudaLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernel",
    "cuLaunchKernelEx",
    "cudaGraphLaunch",
    "cudaMemcpyAsync",
    "cudaMemsetAsync",
)
COMPILED_MARK = "textrl.compiled_token_step"


def zero_reward(prompts, responses):
    return torch.zeros(len(responses))


def byte_tokenizer():
    """A byte-level tokenizer built in code (256 byte tokens + ``<pad>`` + ``<eos>``), left padding:
    the ``--smoke`` run needs no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet + ["<pad>", "<eos>"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def load_model(name: str, device, dtype=torch.float32, tokenizer=None):
    """``(tokenizer, lm)``: TinyStories-656K (real), or random weights of a GPT-2-small shape or
    a shape of ``SHAPES``; ``tokenizer`` defaults to TinyStories' (the assets)."""
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(ASSETS / "tinystories-656k")
    torch.manual_seed(0)
    if name == "tinystories":
        lm = AutoModelForCausalLM.from_pretrained(ASSETS / "tinystories-656k", dtype=torch.float32)
    elif name == "gpt2-small":  # GPT-2-small shape (124M), random weights; prompts use the TinyStories tokenizer
        lm = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257))
    elif name in SHAPES:
        lm = LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, **SHAPES[name]))
    else:
        raise SystemExit(f"unknown model {name!r}; expected tinystories, gpt2-small or one of {sorted(SHAPES)}")
    lm.generation_config.eos_token_id = None  # both sides generate exactly --new-tokens tokens
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, lm.to(device=device, dtype=dtype).eval()


class Rollout:
    """A collector and the matching ``generate`` call on one model, batch and length."""

    def __init__(self, tokenizer, lm, batch_size: int, new_tokens: int, engine: str, device, backend=None):
        self.lm, self.new_tokens, self.batch_size = lm, new_tokens, batch_size
        policy = PolicyWithValueHead(lm).to(device).eval()  # the value head stays float32, as in training
        self.prompts = (builtin_prompts() * (batch_size // len(builtin_prompts()) + 1))[:batch_size]
        env = TokenGenVectorEnv(
            tokenizer,
            self.prompts,
            zero_reward,
            num_envs=batch_size,
            max_new_tokens=new_tokens,
            max_prompt_tokens=PROMPT_TOKENS,
            vocab_size=lm.config.vocab_size,
            stop_on_eos=False,
            device=device,
            autoreset_mode="disabled",
            copy=False,
        )
        self.collector = RolloutCollector(
            env, policy, None, SamplingConfig(), seed=0, engine=engine, compile_backend=backend
        )
        self.enc = tokenizer(
            self.prompts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            truncation=True,
            max_length=PROMPT_TOKENS,
        ).to(device)

    def rollout(self):
        batch = self.collector.collect(prompts=self.prompts)
        assert batch.response_length == self.new_tokens

    @torch.no_grad()
    def generate(self, **kwargs):
        self.lm.generate(
            **self.enc, do_sample=True, max_new_tokens=self.new_tokens, top_k=0, top_p=1.0, temperature=1.0, **kwargs
        )


# -- 1. ops per token step --------------------------------------------------------------------------
class AtenCounter(TorchDispatchMode):
    """Counts every aten op dispatched while active (below autograd: composite ops decomposed)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def quiet_fds():
    """Send file descriptors 1 and 2 to /dev/null for the block: the profiler's C++ side prints a
    ``USDT ... profiler_start``/``profiler_stop`` line at each start and stop."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def profiled(fn, device):
    """``(fn(), events)``: one ``torch.profiler`` session around ``fn`` (CPU activity, plus CUDA on
    CUDA, whose runtime events are the launches), started and stopped quietly."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities)
    with quiet_fds():
        prof.__enter__()
    try:
        out = fn()
    finally:
        with quiet_fds():
            prof.__exit__(None, None, None)
    return out, prof.events()


def _inside(event, name: str) -> bool:
    while event is not None:
        if event.name == name:
            return True
        event = event.cpu_parent
    return False


def count_ops(run, device) -> int:
    """Ops of one call of ``run`` (see the module docstring), counted under one profiler session.

    CUDA: the launches of the whole call. CPU: aten ops dispatched (:class:`AtenCounter`), and
    inside a compiled engine's graph, where a dispatch mode would disable the graph, the top-level
    ``aten::`` events the compiled code records (marked by a ``record_function`` around each step).
    """
    collector = getattr(getattr(run, "__self__", None), "collector", None)
    engine = getattr(collector, "engine", None)
    compiled = getattr(engine, "_step", None)
    if device.type == "cuda":
        torch.cuda.synchronize()
        _, events = profiled(run, device)
        return sum(1 for e in events if e.name in LAUNCHES)
    if compiled is not None:

        def marked(*args):
            with _disable_current_modes(), torch.profiler.record_function(COMPILED_MARK):
                return compiled(*args)

        engine._step = marked
    try:
        counter = AtenCounter()

        def counted():
            with counter:
                return run()

        _, events = profiled(counted, device)
    finally:
        if compiled is not None:
            engine._step = compiled
    inside = sum(
        1
        for e in events
        if e.name.startswith("aten::")
        and _inside(e, COMPILED_MARK)
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    )
    return sum(counter.ops.values()) + inside


def ops_per_step(
    device,
    batch_size: int = 8,
    short: int = 16,
    long: int = 32,
    model: str = "tinystories",
    tokenizer=None,
    backend=None,
) -> dict:
    """Per-token-step ops of ``generate``, textrl eager and textrl compiled (TinyStories-656K by default)."""
    tokenizer, lm = load_model(model, device, tokenizer=tokenizer)
    result = {}
    for name in ("generate", "eager", "compiled"):
        counts = []
        for new_tokens in (short, long):
            r = Rollout(
                tokenizer, lm, batch_size, new_tokens, "compiled" if name == "compiled" else "eager", device, backend
            )
            run = r.generate if name == "generate" else r.rollout
            run()  # warm-up (and compilation)
            counts.append(count_ops(run, device))
        result[name] = (counts[1] - counts[0]) / (long - short)
    return result


# -- 2./3. tokens per second ------------------------------------------------------------------------
def seconds(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed(fns: dict, repeats: int, device) -> dict:
    """Median seconds of each function, timed round-robin ``repeats`` times after a warm-up of each,
    so slow drifts of a shared machine hit every side alike; also the per-round times."""
    for fn in fns.values():
        fn()
    rounds = [{name: seconds(fn, device) for name, fn in fns.items()} for _ in range(repeats)]
    return {name: [r[name] for r in rounds] for name in fns}


def bench(name: str, batch_size: int, new_tokens: int, repeats: int, engines, device) -> dict:
    tokenizer, lm = load_model(name, device)
    fns = {"generate": Rollout(tokenizer, lm, batch_size, new_tokens, "eager", device).generate}
    for engine in engines:
        fns[engine] = Rollout(tokenizer, lm, batch_size, new_tokens, engine, device).rollout
    times = timed(fns, repeats, device)
    tokens = batch_size * new_tokens
    row = {"model": name, "batch": batch_size, "generate": tokens / statistics.median(times["generate"])}
    for engine in engines:
        row[engine] = tokens / statistics.median(times[engine])
        row[f"{engine}_ratio"] = statistics.median(g / r for g, r in zip(times["generate"], times[engine]))
    return row


def copy_bandwidth(device, gib: float = 2.0) -> float:
    """Bytes/s of a large device-to-device copy (each byte read once and written once: 2 × size)."""
    x = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    best = min(seconds(lambda: y.copy_(x), device) for _ in range(5))
    return 2 * x.numel() / best


def bound_tokens_per_s(lm, batch_size: int, new_tokens: int, bandwidth: float) -> float:
    """HBM-bound tokens/s: per step every weight is read once and the KV cache up to the current
    length (prompt + t) once; the bound is batch / (mean bytes per step / bandwidth)."""
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    c = lm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * next(lm.parameters()).element_size()
    mean_len = PROMPT_TOKENS + (new_tokens - 1) / 2
    step_bytes = weight_bytes + batch_size * mean_len * per_token
    return batch_size * bandwidth / step_bytes


def gpu_table(
    repeats: int,
    device,
    *,
    shapes=TABLE_SHAPES,
    batch_sizes=(16, 64, 256),
    new_tokens: int = 128,
    backend=None,
    copy_gib: float = 2.0,
    tokenizer=None,
) -> list[dict]:
    """The bf16 table: per shape and batch size, tokens/s of textrl eager and compiled, HF
    ``generate`` (dynamic cache) and ``generate`` with a static cache, and the bandwidth bound.
    The LM's weights are bfloat16 and its value head float32 (as in training, where the value head
    is a float32 module); ``backend`` is the compiled engine's (default inductor). Returns the rows."""
    bandwidth = copy_bandwidth(device, copy_gib)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\nGPU: {name}, bf16, {new_tokens} new tokens, copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    print(
        "| model | batch | textrl eager tok/s | textrl compiled tok/s | generate tok/s | generate static+compile "
        "tok/s | compiled ÷ generate | compiled ÷ static | bound tok/s | compiled ÷ bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for shape in shapes:
        tokenizer, lm = load_model(shape, device, torch.bfloat16, tokenizer=tokenizer)
        for batch_size in batch_sizes:
            eager = Rollout(tokenizer, lm, batch_size, new_tokens, "eager", device)
            compiled = Rollout(tokenizer, lm, batch_size, new_tokens, "compiled", device, backend)
            fns = {
                "eager": eager.rollout,
                "compiled": compiled.rollout,
                "generate": eager.generate,
                "static": lambda: eager.generate(cache_implementation="static"),
            }
            times = timed(fns, repeats, device)
            assert compiled.collector.engine.failure is None, compiled.collector.engine.failure
            tps = {k: batch_size * new_tokens / statistics.median(v) for k, v in times.items()}
            bound = bound_tokens_per_s(lm, batch_size, new_tokens, bandwidth)
            print(
                f"| {shape} | {batch_size} | {tps['eager']:.0f} | {tps['compiled']:.0f} | {tps['generate']:.0f} | "
                f"{tps['static']:.0f} | {tps['compiled'] / tps['generate']:.2f} | "
                f"{tps['compiled'] / tps['static']:.2f} | {bound:.0f} | {tps['compiled'] / bound:.2f} |",
                flush=True,
            )
            rows.append({"model": shape, "batch": batch_size, **tps, "bound": bound})
        del lm
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def smoke(skip_ops: bool = False) -> None:
    """``--smoke``: the ops count (unless ``skip_ops``) and the GPU table's code path on the CPU with
    a random tiny model (byte tokenizer, no files), 4 new tokens, the compiled engine on
    ``aot_eager``: seconds, for CI."""
    device = torch.device("cpu")
    tokenizer = byte_tokenizer()
    logging.getLogger("textrl.envs").setLevel(logging.ERROR)  # byte-level prompts are cut to 24 tokens
    if not skip_ops:
        ops = ops_per_step(
            device, batch_size=2, short=2, long=4, model="tiny", tokenizer=tokenizer, backend="aot_eager"
        )
        print(f"ops_per_step generate={ops['generate']:.0f} eager={ops['eager']:.0f} compiled={ops['compiled']:.0f}")
    rows = gpu_table(
        1,
        device,
        shapes=("tiny",),
        batch_sizes=(2,),
        new_tokens=4,
        backend="aot_eager",
        copy_gib=1 / 64,
        tokenizer=tokenizer,
    )
    print(f"smoke_ok rows={len(rows)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--models", nargs="+", default=["tinystories", "gpt2-small"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--engines", nargs="+", default=None, help="default: eager on CPU, eager compiled on CUDA")
    parser.add_argument("--skip-ops", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--gpu-table", action="store_true", help="CUDA only: the bf16 SmolLM2/1B table")
    parser.add_argument("--table-shapes", nargs="+", default=list(TABLE_SHAPES), help="shapes of the GPU table")
    parser.add_argument("--table-batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--table-new-tokens", type=int, default=128)
    parser.add_argument(
        "--smoke", action="store_true", help="the ops count and the GPU table's code path, tiny, on the CPU (CI)"
    )
    add_docs_argument(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke(args.skip_ops)

    if not args.write_docs:
        return measure(args)
    with record_output() as printed:
        measure(args)
    write_page(
        "rollout",
        title="Rollout speed: ops per token step and tokens/s against generate",
        tables=[as_markdown(printed.text)],
        notes="The rollout through `TokenGenVectorEnv` with the KV cache against `model.generate` on the same "
        "model, batch and sampling (EOS off on both sides), timed alternately; the ratio is the median of "
        "the per-pair ratios and `rollout_vs_generate` the lowest. Ops per step: the 32-token minus the "
        "16-token run, divided by 16 (aten ops on CPU, kernel launches on CUDA).",
    )


def measure(args) -> None:
    """Run the measurements of :func:`main` and print them."""
    device = torch.device(args.device)
    engines = args.engines or (["eager", "compiled"] if device.type == "cuda" else ["eager"])
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    if not args.skip_ops:
        ops = ops_per_step(device)
        unit = "kernel launches" if device.type == "cuda" else "aten ops"
        print(f"{unit} per token step, TinyStories-656K, batch 8 (32- minus 16-token run, ÷ 16):")
        print(f"ops_per_step generate={ops['generate']:.0f} eager={ops['eager']:.0f} compiled={ops['compiled']:.0f}")
    if not args.skip_throughput:
        print(f"new_tokens={args.new_tokens} repeats={args.repeats} (medians; ratio = median of alternating rounds)")
        head = "".join(f" {e + ' tok/s':>14} | {e + ' ratio':>12} |" for e in engines)
        print(f"| {'model':<12} | {'batch':>5} | {'generate tok/s':>14} |{head}", flush=True)
        rows = []
        for m in args.models:
            for b in args.batch_sizes:
                r = bench(m, b, args.new_tokens, args.repeats, engines, device)
                cells = "".join(f" {r[e]:>14.0f} | {r[e + '_ratio']:>12.2f} |" for e in engines)
                print(f"| {r['model']:<12} | {r['batch']:>5} | {r['generate']:>14.0f} |{cells}", flush=True)
                rows.append(r)
        print(f"rollout_vs_generate={min(r[e + '_ratio'] for r in rows for e in engines):.2f}")
    if args.gpu_table:
        if device.type != "cuda":
            raise SystemExit("--gpu-table needs --device cuda")
        gpu_table(
            args.repeats,
            device,
            shapes=args.table_shapes,
            batch_sizes=args.table_batch_sizes,
            new_tokens=args.table_new_tokens,
        )


if __name__ == "__main__":
    main()
