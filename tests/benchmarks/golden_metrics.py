"""Golden metrics: seeded short RL runs on TinyStories, saved once and compared after a change
that must not change behaviour (a refactor of the optimisation loop, say).

Usage::

    python tests/benchmarks/golden_metrics.py --save before.json     # on the old code
    python tests/benchmarks/golden_metrics.py --compare before.json  # on the new code

Each run is ``experiment=tinystories_sentiment`` with ``trainer.updates`` (default 4),
``seed=0``, ``trainer.threads=1`` (so the float reductions run in the same order every time) on
the CPU, one per algorithm:

- ``ppo``: PPO;
- ``reinforce_rloo``: REINFORCE, ``algo.baseline=leave_one_out``, ``rollout.samples_per_prompt=4``
  (and ``reinforce_rloo_1epoch``, the same with ``algo.epochs=1``);
- ``ppo_ptx``: PPO-ptx on the TinyStories text, γ_ptx = 0.5;
- ``grpo``: the GRPO plugin (``plugins/textrl-grpo``, group size 4).

The record of a run is its ``metrics.jsonl`` without the ``perf/*`` keys (wall-clock times).
``--compare`` prints one table row per run (records, values equal to the bit among the keys
both have, the largest absolute and relative difference and its key, then the keys added (+),
removed (-) or declared changed with ``--changed RUN:KEY`` (~)) and exits 1 when a run lost a
key or a record, or a value differs beyond ``--rtol`` (default 0: bit-for-bit). New keys (a
metric an algorithm did not report before) are listed but do not fail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("TEXTRL_ASSETS", REPO.parent / "shared" / "assets"))

RUNS = {
    "ppo": ["algo=ppo"],
    "reinforce_rloo": ["algo=reinforce", "algo.baseline=leave_one_out", "rollout.samples_per_prompt=4"],
    "reinforce_rloo_1epoch": [
        "algo=reinforce",
        "algo.baseline=leave_one_out",
        "rollout.samples_per_prompt=4",
        "algo.epochs=1",
    ],
    "ppo_ptx": [
        "algo=ppo_ptx",
        f"algo.ptx_data={ASSETS / 'tinystories-text' / 'tinystories_1000.json'}",
        "algo.ptx_coef=0.5",
    ],
    "grpo": ["algo=grpo"],
}


def run(name: str, updates: int, out: Path) -> list[dict]:
    """The ``metrics.jsonl`` records (without ``perf/*``) of run ``name`` in ``out``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TEXTRL_ASSETS": str(ASSETS)}
    args = [
        sys.executable,
        "-m",
        "textrl",
        "experiment=tinystories_sentiment",
        *RUNS[name],
        "seed=0",
        f"trainer.updates={updates}",
        "trainer.threads=1",
        "device=cpu",
        "logger=none",
        "trainer.save_policy=false",
        "trainer.progress_bar=false",
        "trainer.sample_every=0",
        f"hydra.run.dir={out}",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{' '.join(args)}\n{result.stderr[-3000:]}")
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


def capture(names: list[str], updates: int) -> dict:
    """``{"updates": n, "runs": {name: records}}`` for the named runs."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            runs[name] = run(name, updates, Path(tmp) / name)
            print(f"{name}: {len(runs[name])} records", file=sys.stderr)
    return {"updates": updates, "runs": runs}


def compare(old: list[dict], new: list[dict], changed: set[str]) -> dict:
    """Row of the comparison table for one run: values equal to the bit among the keys both
    records have, the keys only the new (added) or only the old (removed) records have, and the
    largest difference outside ``changed`` (keys declared changed on purpose)."""
    row = {
        "records": f"{len(new)}/{len(old)}",
        "equal": 0,
        "values": 0,
        "added": set(),
        "removed": set(),
        "max_abs": 0.0,
        "max_rel": 0.0,
        "worst": "-",
        "declared": set(),
    }
    for a, b in zip(old, new):
        row["added"] |= set(b) - set(a)
        row["removed"] |= set(a) - set(b)
        for key in set(a) & set(b):
            x, y = a[key], b[key]
            row["values"] += 1
            if x == y:
                row["equal"] += 1
                continue
            if key in changed:
                row["declared"].add(key)
                continue
            diff = abs(x - y) if isinstance(x, (int, float)) and isinstance(y, (int, float)) else math.inf
            rel = diff / max(abs(x), abs(y), 1e-30)
            if rel >= row["max_rel"]:
                row["max_abs"], row["max_rel"], row["worst"] = diff, rel, key
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", metavar="FILE", help="capture the runs and write them to FILE")
    action.add_argument("--compare", metavar="FILE", help="capture the runs and compare them with FILE")
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--rtol", type=float, default=0.0, help="largest relative difference accepted")
    parser.add_argument(
        "--changed",
        nargs="*",
        default=[],
        metavar="RUN:KEY",
        help="metrics whose definition changed on purpose (listed, not compared)",
    )
    parser.add_argument(
        "--against", metavar="FILE", help="with --compare: compare with this saved capture instead of running now"
    )
    args = parser.parse_args()
    if args.save:
        golden = capture(args.runs, args.updates)
        Path(args.save).write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        print(f"saved {len(golden['runs'])} runs x {args.updates} updates to {args.save}")
        return
    golden = json.loads(Path(args.compare).read_text())
    names = [n for n in args.runs if n in golden["runs"]]
    current = (
        json.loads(Path(args.against).read_text())["runs"]
        if args.against
        else capture(names, golden["updates"])["runs"]
    )
    print(f"{'run':<16} {'records':>8} {'bit-equal':>11} {'max_abs':>10} {'max_rel':>10}  worst key; key changes")
    failed = False
    for name in names:
        changed = {c.split(":", 1)[1] for c in args.changed if c.split(":", 1)[0] == name}
        row = compare(golden["runs"][name], current[name], changed)
        notes = [f"+{k}" for k in sorted(row["added"])] + [f"-{k}" for k in sorted(row["removed"])]
        notes += [f"~{k} (declared changed)" for k in sorted(row["declared"])]
        print(
            f"{name:<16} {row['records']:>8} {row['equal']:>5}/{row['values']:<5} {row['max_abs']:>10.3g} "
            f"{row['max_rel']:>10.3g}  {row['worst']}; {' '.join(notes) or 'same keys'}"
        )
        failed |= bool(row["removed"]) or len(golden["runs"][name]) != len(current[name]) or row["max_rel"] > args.rtol
    print("identical" if not failed else f"DIFFERENT (beyond rtol={args.rtol})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
