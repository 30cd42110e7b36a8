"""Credit assignment on the calculator task at equal sampled tokens: PPO, RLOO, GRPO, VinePPO and
same-state GRPO from the same SFT model, and how well PPO's value head ranks states against Monte
Carlo values (VinePPO's "1 of 5" test).

Usage::

    python tests/benchmarks/branching_calculator.py [--run-dir DIR] [--seeds N | --seed-list 0,1,2]
        [--budget TOKENS] [--eval-prompts N] [--write-docs] [overrides...]

Runs (each recorded, ``DIR/seed<k>/<phase>``, see ``protocol.py``; a finished one is reused):

1. ``sft``: ``textrl experiment=calculator stage=sft`` (SmolLM2-135M-Instruct on tool-use
   demonstrations), the starting point of every algorithm of that seed;
2. one phase per algorithm (:data:`ALGORITHMS`): ``stage=rl`` from the SFT model until
   ``trainer.token_budget=--budget`` tokens are sampled (``perf/sampled_tokens``: the batch's own
   and every branched continuation's), then ``stage=eval`` on ``--eval-prompts`` held-out problems
   (``arithmetic:heldout``) against the SFT model;
3. ``rank``: the "1 of 5" test on PPO's trained policy: for held-out problems, 5 episodes each;
   the state after each episode's first tool result gets a Monte Carlo value from 4 branched
   continuations and the value head's V; the test counts how often the value head's best of the 5
   states has the highest Monte Carlo value (one of them where several tie), against a random pick's
   chance (tied best ÷ 5, averaged; problems whose 5 Monte Carlo values are all equal are left out:
   after the tool result most states are sure wins). 48 problems, 8 at a time.

Prints the accuracy table (mean over seeds with a 95% bootstrap interval, updates run, sampled
tokens, wall time per phase), the per-seed table and the ranking test; draws the training accuracy
per update (mean over seeds with a min–max band; an update of a branching algorithm samples several
times the tokens of one without, so its curve has fewer points for the same budget). Not collected
by pytest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from docs_page import add_docs_argument, record_output, write_page  # noqa: E402
from protocol import (  # noqa: E402
    INTERVAL_NOTE,
    Panel,
    SeedRow,
    add_seed_arguments,
    mean_interval,
    plot_seed_curves,
    require_clean_tree,
    run_recorded,
    seed_dir,
    seed_table,
    seeds_of,
)
from textrl_run import run_textrl  # noqa: E402

ALGORITHMS = {
    "ppo": ["algo=ppo"],
    "rloo": ["algo=reinforce", "algo.baseline=leave_one_out", "rollout.samples_per_prompt=4", "algo.epochs=1"]
    + ["algo.lr=2.0e-5"],
    "grpo": ["algo=grpo", "algo.group_size=4", "algo.lr=2.0e-5"],
    "vineppo": ["algo=vineppo", "algo.branch.at=turns", "algo.branch.k=2"],
    "grpo_same_state": ["algo=grpo", "algo.group_by=state", "algo.branch.at=turns", "algo.branch.k=2"]
    + ["algo.lr=2.0e-5"],
}
"""Phase → the settings of its RL run (the calculator experiment's PPO settings otherwise)."""
MAX_UPDATES = 60  # the token budget ends every run first


def phase_commands(root: Path, seed: int, *, budget: int, eval_prompts: int) -> dict[str, list[list[str]]]:
    """The ``textrl`` argument lists of each phase of ``seed`` (without the common ones)."""
    run = seed_dir(root, seed)
    sft = run / "sft" / "model"
    commands = {"sft": [["stage=sft", f"hydra.run.dir={run / 'sft'}"]]}
    for name, settings in ALGORITHMS.items():
        commands[name] = [
            [
                "stage=rl",
                *settings,
                f"policy.model={sft}",
                "policy.gguf_file=null",
                f"trainer.updates={MAX_UPDATES}",
                f"trainer.token_budget={budget}",
                f"hydra.run.dir={run / name / 'rl'}",
            ],
            [
                "stage=eval",
                f"policy.model={run / name / 'rl' / 'policy'}",
                "policy.gguf_file=null",
                f"eval.reference={sft}",
                "eval.reference_gguf_file=null",
                f"eval.num_prompts={eval_prompts}",
                f"hydra.run.dir={run / name / 'eval'}",
            ],
        ]
    return commands


def run_all(
    root: Path, seeds: list[int], *, experiment: str, budget: int, eval_prompts: int, overrides: list[str]
) -> dict:
    """Run (or reuse) every phase of every seed; ``{phase: {seed: record}}``."""
    common = [f"experiment={experiment}", "trainer.progress_bar=false", *overrides]
    records: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        commands = phase_commands(root, seed, budget=budget, eval_prompts=eval_prompts)
        for phase, phase_args in commands.items():
            records.setdefault(phase, {})[seed] = run_recorded(
                seed_dir(root, seed) / phase,
                seed=seed,
                commands=[[*common, *c, f"seed={seed}"] for c in phase_args],
                run_command=run_textrl,
            )
        ppo = seed_dir(root, seed) / "ppo" / "rl" / "policy"
        records.setdefault("rank", {})[seed] = run_recorded(
            seed_dir(root, seed) / "rank",
            seed=seed,
            commands=[["--rank", str(ppo), "--seed", str(seed), f"experiment={experiment}", *overrides]],
            run_command=run_ranking,
        )
    return records


def run_ranking(args: list[str], log_path: Path) -> float:
    """Run :func:`rank_states` in a subprocess (``args``: ``--rank POLICY --seed S [overrides]``),
    its result in ``log_path.parent/rank.json``; returns the wall time."""
    import time

    start = time.perf_counter()
    out = log_path.parent / "rank.json"
    with open(log_path, "w") as log:
        code = subprocess.run([sys.executable, __file__, *args, "--out", str(out)], stdout=log, stderr=log)
    if code.returncode:
        raise SystemExit(f"the ranking test failed; the end of {log_path}:\n{log_path.read_text()[-3000:]}")
    return time.perf_counter() - start


def rank_states(
    policy_dir: str, seed: int, overrides: list[str], *, problems: int = 48, problems_per_batch: int = 8
) -> dict:
    """The "1 of 5" test (see the module docstring) on ``problems`` held-out problems (``overrides``
    start with ``experiment=<name>``), drawn without replacement with ``seed`` and played
    ``problems_per_batch`` at a time: every branched continuation holds a copy of its state's KV
    cache, so all 48 problems in one batch (240 episodes and their branches) needed over 24 GB
    with SmolLM2-135M."""
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module

    from textrl.config import register_configs, register_plugin_configs
    from textrl.config.schema import BranchConfig
    from textrl.data_sources import DataSources
    from textrl.plugins import load_plugins
    from textrl.stages.build import build_rollout_parts, make_collector

    registry = load_plugins()
    register_configs()
    register_plugin_configs(registry)
    slots = 5 * problems_per_batch
    with initialize_config_module("textrl.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"policy.model={policy_dir}",
                "policy.gguf_file=null",
                f"rollout.batch_size={slots}",
                f"seed={seed}",
                "data.prompts=arithmetic:heldout",
                *overrides,
            ],
        )
    torch.manual_seed(seed)
    parts = build_rollout_parts(cfg, registry, "cpu", "rl", num_envs=slots, sources=DataSources(registry.datasets))
    collector = make_collector(
        cfg,
        parts.env,
        parts.policy,
        parts.reference,
        seed=seed,
        samples_per_prompt=5,
        branching=BranchConfig(k=4, at="turns"),
    )
    pool = parts.env.prompts
    picks = np.random.default_rng(seed).choice(len(pool), size=min(problems, len(pool)), replace=False)
    hits, counted, chance = 0, 0, 0.0
    for start in range(0, len(picks), problems_per_batch):
        chosen = [pool[i] for i in picks[start : start + problems_per_batch]]
        groups = len(chosen)
        chosen += chosen[-1:] * (problems_per_batch - groups)  # a short last batch repeats a problem, not ranked
        with torch.no_grad():
            batch = collector.collect(prompts=[p for p in chosen for _ in range(5)])
        found, best, luck = rank_batch(batch, groups=groups)
        counted, hits, chance = counted + found, hits + best, chance + luck
    share = lambda x: x / counted if counted else None  # noqa: E731
    return {"groups": counted, "hits": hits, "accuracy": share(hits), "chance": share(chance)}


def rank_batch(batch, *, groups: int) -> tuple[int, int, float]:
    """``(groups ranked, hits, chance)`` over the first ``groups`` groups of 5 consecutive episodes
    of ``batch`` (a branched :class:`~textrl.rollout.buffer.RolloutBatch`). Each episode's state is
    the first chosen state after the prompt (its first turn boundary). A hit: the state the value
    head rates highest has the highest Monte Carlo value (one of them, where several tie for it);
    ``chance`` sums, over the ranked groups, the hit probability of a random pick (tied best ÷ 5).
    A group with an episode that has no such state, or whose 5 Monte Carlo values are all equal
    (nothing to rank), is left out."""
    import torch

    mask = batch.branches.mask * batch.action_mask
    turn_two = mask.clone()
    turn_two[torch.arange(batch.batch_size), mask.argmax(1)] = 0  # drop the prompt: the first chosen state
    hits, counted, chance = 0, 0, 0.0
    for group in range(groups):
        rows = range(5 * group, 5 * group + 5)
        states = [(row, turn_two[row].nonzero().flatten()) for row in rows]
        if any(len(cols) == 0 for _, cols in states):
            continue  # an episode with no second turn has no state to rank
        mc = torch.tensor([float(batch.branches.mean[row, cols[0]]) for row, cols in states])
        head = torch.tensor([float(batch.values[row, cols[0]]) for row, cols in states])
        best = mc == mc.max()
        if best.all():
            continue  # every state has the same Monte Carlo value: nothing to rank
        counted += 1
        hits += int(best[head.argmax()])
        chance += float(best.sum()) / 5
    return counted, hits, chance


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(root: Path, seeds: list[int], *, records: dict) -> list:
    """Print the tables; returns the figure paths."""
    print("| algorithm | held-out accuracy (mean [95% interval]) | updates | sampled tokens | RL + eval wall (min) |")
    print("| --- | --- | --- | --- | --- |")
    rows, curves = [], {}
    for name in ALGORITHMS:
        accuracy = [
            json.loads((seed_dir(root, s) / name / "eval" / "eval.json").read_text())["policy"]["accuracy"]
            for s in seeds
        ]
        summaries = [json.loads((seed_dir(root, s) / name / "rl" / "summary.json").read_text()) for s in seeds]
        interval = mean_interval([100 * a for a in accuracy])
        updates = sum(s["updates"] for s in summaries) / len(summaries)
        tokens = sum(s["sampled_tokens"] for s in summaries) / len(summaries)
        wall = sum(records[name][s]["wall_s"] for s in seeds) / len(seeds) / 60
        print(f"| {name} | **{interval.format('.1f')}**% | {updates:.1f} | {tokens:,.0f} | {wall:.1f} |")
        rows.append(SeedRow(f"{name} accuracy (%)", [100 * a for a in accuracy], ".1f"))
        curves[name] = [
            [r.get("reward/correct", 0.0) for r in read_jsonl(seed_dir(root, s) / name / "rl" / "metrics.jsonl")]
            for s in seeds
        ]
    print()
    print(seed_table(rows, seeds=seeds))
    print(INTERVAL_NOTE)
    print()
    ranks = [json.loads((seed_dir(root, s) / "rank" / "rank.json").read_text()) for s in seeds]
    print("| seed | groups ranked | value head picks the Monte Carlo best | chance |")
    print("| --- | --- | --- | --- |")
    for s, r in zip(seeds, ranks):
        accuracy, chance = ("-" if r[k] is None else f"{100 * r[k]:.0f}%" for k in ("accuracy", "chance"))
        print(f"| {s} | {r['groups']} | {accuracy} | {chance} |")
    figure = plot_seed_curves(
        root / "curves.png",
        panels=[Panel("training accuracy (fraction correct)", curves)],
        title="training accuracy per update, mean over seeds (band: min-max)",
    )
    return [figure]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--budget", type=int, default=12_000)
    parser.add_argument("--eval-prompts", type=int, default=100)
    parser.add_argument("--experiment", default="calculator", help="calculator_tiny: a smoke run at TinyStories size")
    parser.add_argument("--rank", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    add_seed_arguments(parser)
    add_docs_argument(parser)
    args, overrides = parser.parse_known_args()
    if args.rank:
        Path(args.out).write_text(json.dumps(rank_states(args.rank, args.seed, overrides)))
        return
    if args.write_docs:
        require_clean_tree()
    root = args.run_dir or Path(tempfile.mkdtemp(prefix="branching_calculator_"))
    seeds = seeds_of(args)
    records = run_all(
        root, seeds, experiment=args.experiment, budget=args.budget, eval_prompts=args.eval_prompts, overrides=overrides
    )
    if not args.write_docs:
        report(root, seeds, records=records)
        return
    with record_output() as printed:
        figures = report(root, seeds, records=records)
    runs = [seed_dir(root, s) / phase for phase in records for s in seeds]
    write_page(
        "branching-calculator",
        title="Credit assignment on the calculator task at equal sampled tokens",
        tables=[printed.text],
        pictures=figures,
        runs=runs,
        run_dir=root,
        notes=f"SmolLM2-135M-Instruct after SFT (one SFT run per seed, shared by its algorithms); each "
        f"algorithm's RL stops once {args.budget:,} tokens are sampled (branches included), then is evaluated "
        f"on {args.eval_prompts} held-out problems against the SFT model.",
    )


if __name__ == "__main__":
    main()
