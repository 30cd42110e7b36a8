"""Peak resident memory per process of an RL run on the CPU, against the number of processes and
the sharding (``trainer.sharding=none|fsdp``, ``trainer.rollout_gather``), for SmolLM2-135M.

Usage::

    python tests/benchmarks/fsdp_memory.py [--configs 1:none 2:none 1:fsdp 2:fsdp 2:fsdp:per_layer]
        [--policy smollm2] [--updates 2] [--batch-size 4] [--new-tokens 8] [--mmap-threshold BYTES]
        [--out fsdp_memory.json] [-- EXTRA_TEXTRL_OVERRIDES...]

Each configuration ``PROCESSES:SHARDING[:GATHER]`` is one ``textrl`` run in fresh processes (one
process: ``python``; several: ``accelerate launch`` with ``textrl/data/accelerate/fsdp.yaml`` when
sharded, ``--multi_gpu`` otherwise, gloo on the CPU). Every process runs this script's worker,
which runs the ``textrl`` command in-process and records its peak resident set (``VmHWM`` from
``/proc/self/status``: torch, the tokenizer and everything else included) for each phase of the
run, resetting it in between (``/proc/self/clear_refs``): ``load`` (loading the models, building
π_ref and the env, sharding: every process loads the policy whole first, and SmolLM2's GGUF file
is dequantised on the way), ``train`` (the updates: rollouts, gathering, losses, AdamW) and
``save`` (consolidating and writing ``policy/``). Printed per configuration: each process's peak
per phase, and from the run's ``summary.json`` the bytes each process stores for the policy's,
π_ref's and the optimizer's tensors (:func:`textrl.sharding.stored_bytes`). The arithmetic for
larger models is in docs/guides/distributed.md.

Resident memory is not the live tensors: the Python process with torch and transformers holds
~0.5 GB before any model, and glibc's allocator keeps freed blocks below its mmap threshold (which
grows up to 32 MB as large blocks are freed: a layer's gathered weights, the loaded copies freed by
sharding) for reuse instead of returning them, so the peaks of an unsharded run and a sharded one
differ by less than what they store. ``--mmap-threshold BYTES`` sets ``MALLOC_MMAP_THRESHOLD_``
in the runs (a fixed threshold, e.g. 131072: blocks from 128 KiB up are returned when freed), so
that the resident set follows the live tensors. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs_page and protocol, beside this script
from docs_page import add_docs_argument, write_page  # noqa: E402
from protocol import require_clean_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FSDP_CONFIG = REPO / "textrl" / "data" / "accelerate" / "fsdp.yaml"
DEFAULT_CONFIGS = ["1:none", "2:none", "1:fsdp", "2:fsdp", "2:fsdp:per_layer"]


def peak_rss_bytes() -> int:
    """This process's peak resident set (``VmHWM``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Set this process's ``VmHWM`` back to its current resident set (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def worker(out: str, textrl_args: list[str]) -> int:
    """Run ``textrl TEXTRL_ARGS`` in this process with the rl stage's ``build`` and ``finish``
    wrapped to end a phase (read the peak, reset it), then write ``{"rank", "peak_rss_bytes":
    {phase: bytes}}`` to ``OUT/rss_<rank>.json``; returns textrl's exit status."""
    from textrl.cli import main
    from textrl.stages import rl

    peaks: dict[str, int] = {}

    def end_phase(name: str) -> None:
        peaks[name] = peak_rss_bytes()
        reset_peak_rss()

    build, finish = rl.build, rl.finish

    def timed_build(*args, **kwargs):
        run = build(*args, **kwargs)
        end_phase("load")
        return run

    def timed_finish(*args, **kwargs):
        end_phase("train")
        return finish(*args, **kwargs)

    rl.build, rl.finish = timed_build, timed_finish
    sys.argv = ["textrl", *textrl_args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    end_phase("save")
    rank = int(os.environ.get("RANK", "0") or 0)
    Path(out, f"rss_{rank}.json").write_text(json.dumps({"rank": rank, "peak_rss_bytes": peaks}))
    return code


def run_config(config: str, args, extra: list[str], root: Path) -> dict:
    """One configuration ``PROCESSES:SHARDING[:GATHER]``: its run, its processes' peaks and stored bytes."""
    parts = config.split(":")
    processes, sharding = int(parts[0]), parts[1]
    gather = parts[2] if len(parts) > 2 else "whole"
    out = root / config.replace(":", "_")
    out.mkdir(parents=True)
    textrl_args = [
        f"policy={args.policy}",
        f"hydra.run.dir={out / 'run'}",
        "device=cpu",
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.threads=1",
        f"trainer.updates={args.updates}",
        f"rollout.batch_size={args.batch_size}",
        f"algo.minibatch_size={args.batch_size // processes}",
        "algo.epochs=1",
        f"env.max_new_tokens={args.new_tokens}",
        f"trainer.sharding={sharding}",
        f"trainer.rollout_gather={gather}",
        *extra,
    ]
    script = [str(Path(__file__).resolve()), "--worker", str(out), "--", *textrl_args]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        launcher = ["--config_file", str(FSDP_CONFIG)] if sharding == "fsdp" else ["--multi_gpu"]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
        cmd += script
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    if args.mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"fsdp_memory: {config} failed:\n{result.stderr[-3000:]}")
    peaks = [json.loads((out / f"rss_{r}.json").read_text())["peak_rss_bytes"] for r in range(processes)]
    summary = json.loads((out / "run" / "summary.json").read_text())
    return {
        "config": config,
        "processes": processes,
        "sharding": sharding,
        "rollout_gather": gather if sharding == "fsdp" else None,
        "peak_rss_bytes": peaks,
        "stored_bytes": summary.get("stored_bytes"),
        "wall_time_s": summary["wall_time_s"],
    }


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


PHASES = ("load", "train", "save")


def table(rows: list[dict]) -> str:
    """The results as a Markdown table (GB = 1e9 bytes; several processes' figures separated by /)."""
    lines = [
        "| processes | sharding | rollout gather | peak RSS, load (GB) | peak RSS, train (GB) | peak RSS, save (GB) "
        "| stored: policy + π_ref + AdamW (GB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        stored = r["stored_bytes"] or []
        per_process = [gb(s.get("policy", 0) + s.get("reference", 0) + s.get("optimizer", 0)) for s in stored]
        phases = [" / ".join(gb(p[phase]) for p in r["peak_rss_bytes"]) for phase in PHASES]
        lines.append(
            f"| {r['processes']} | {r['sharding']} | {r['rollout_gather'] or '–'} | {' | '.join(phases)} "
            f"| {' / '.join(per_process) or '–'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        out, rest = argv[1], argv[2:]
        raise SystemExit(worker(out, rest[1:] if rest[:1] == ["--"] else rest))
    extra = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="PROCESSES:SHARDING[:GATHER]")
    parser.add_argument("--policy", default="smollm2", help="a policy= preset (conf/policy/)")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="rollout.batch_size, over all processes")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--mmap-threshold", type=int, help="MALLOC_MMAP_THRESHOLD_ for the runs (glibc)")
    parser.add_argument("--out", help="write the results as JSON here")
    add_docs_argument(parser)
    args = parser.parse_args(argv)
    if args.write_docs:
        require_clean_tree()  # refuse now rather than after the runs
    rows = []
    with tempfile.TemporaryDirectory(prefix="fsdp_memory-") as root:
        for config in args.configs:
            rows.append(run_config(config, args, extra, Path(root)))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    threshold = f" MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold is not None else ""
    settings = (
        f"policy={args.policy} updates={args.updates} rollout.batch_size={args.batch_size} "
        f"env.max_new_tokens={args.new_tokens} on the CPU{threshold}"
    )
    print(f"\n{settings}\n")
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    if args.write_docs:
        write_page(
            "fsdp-memory",
            title="Sharded training (FSDP2) on CPU processes: peak resident memory per process",
            tables=[f"{settings}\n\n{table(rows)}"],
            notes="One `textrl` RL run per configuration (processes : sharding : rollout gathering), each "
            "process's peak resident set per phase (load, train, save) and the bytes it stores for the "
            "policy, π_ref and the AdamW state. See the module docstring of `tests/benchmarks/fsdp_memory.py` "
            "for what resident memory counts, and the distributed guide for the arithmetic at 1B, 7B and 13B.",
        )


if __name__ == "__main__":
    main()
