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

Multi-turn runs:

- ``calculator_tiny`` and ``hh_dialogue_tiny``: the whole ``experiment=...`` pipeline (SFT or RM,
  then PPO with the interaction, then eval); the record is every stage's ``metrics.jsonl`` in
  stage order, each record tagged with its ``stage``.
- ``scripted_ppo``, ``scripted_reinforce``, ``scripted_rloo`` and ``scripted_grpo``: episodes with
  real turns on TinyStories-656K (whose tiny experiments rarely end a turn before the token
  budget): an interaction whose turns end at common words, replies of 1-3 words and a turn reward,
  run in-process through the Python API (:func:`scripted_records`) for ``--updates`` updates.

The record of a run is its ``metrics.jsonl`` without the wall-clock keys (``perf/*`` and the HF
Trainer's timings, :data:`WALL_CLOCK`).
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
PIPELINES = {"calculator_tiny": ["experiment=calculator_tiny"], "hh_dialogue_tiny": ["experiment=hh_dialogue_tiny"]}
SCRIPTED = {
    "scripted_ppo": ("ppo", {}, 1),
    "scripted_reinforce": ("reinforce", {"baseline": "moving_average"}, 1),
    "scripted_rloo": ("reinforce", {"baseline": "leave_one_out"}, 4),
    "scripted_grpo": ("grpo", {"group_size": 4}, 4),
}
ALL_RUNS = [*RUNS, *PIPELINES, *SCRIPTED]


# SFT/RM: the HF Trainer's timings
WALL_CLOCK = ("perf/", "/runtime", "/samples_per_second", "/steps_per_second", "/model_preparation_time")


def without_perf(records: list[dict]) -> list[dict]:
    """``records`` without their wall-clock keys (``perf/*``, and the HF Trainer's ``*/runtime``,
    ``*/samples_per_second``, ``*/steps_per_second``, ``*/model_preparation_time`` of the SFT and
    RM stages)."""
    return [{k: v for k, v in r.items() if not any(w in k for w in WALL_CLOCK)} for r in records]


def run(name: str, updates: int, out: Path) -> list[dict]:
    """The ``metrics.jsonl`` records (without ``perf/*``) of run ``name`` in ``out``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TEXTRL_ASSETS": str(ASSETS)}
    if name in SCRIPTED:
        args = [sys.executable, __file__, "--scripted", name, "--updates", str(updates), "--out", str(out)]
        result = subprocess.run(args, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"})
        if result.returncode != 0:
            raise SystemExit(f"run {name} failed:\n{result.stderr[-3000:]}")
        return json.loads(out.read_text())
    experiment = PIPELINES.get(name, ["experiment=tinystories_sentiment", *RUNS.get(name, [])])
    args = [
        sys.executable,
        "-m",
        "textrl",
        *experiment,
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
    if name not in PIPELINES:
        with open(out / "metrics.jsonl") as f:
            return without_perf([json.loads(line) for line in f if line.strip()])
    records = []
    for stage in ("sft", "rm", "rl", "eval"):
        path = out / stage / "metrics.jsonl"
        if path.exists():
            with open(path) as f:
                records += [{"stage": stage, **json.loads(line)} for line in f if line.strip()]
    return without_perf(records)


def scripted_records(name: str, updates: int) -> list[dict]:
    """Metrics of ``updates`` updates of the scripted multi-turn run ``name`` (see the module
    docstring), in this process: TinyStories-656K, 8 episodes per batch, up to 4 policy turns of at
    most 6 tokens; each record adds the batch's summed rewards and its count of action tokens."""
    import torch
    from transformers import AutoTokenizer

    import textrl
    from textrl.plugins import load_plugins
    from textrl.policies.policy import PolicyWithValueHead
    from textrl.policies.reference import make_reference
    from textrl.policies.sampling import SamplingConfig
    from textrl.rollout.collector import RolloutCollector
    from textrl.envs import TokenGenVectorEnv

    class Chatty(textrl.Interaction):
        stop_strings = ("dog", "cat", "ball", " the")

        def respond(self, episode):
            k = episode.policy_turns
            if k >= 3:
                return textrl.Reply.end(reward=0.5)
            words = ["fun", "day", "park"][: (len(episode.prompt) + k) % 3 + 1]
            ids = self.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
            return textrl.Reply.append(ids, reward=0.25 * k)

    def happy(prompts, responses):
        return torch.tensor([float(r.count("happy") + 0.1 * len(r.split())) for r in responses])

    torch.manual_seed(0)
    torch.set_num_threads(1)
    algo_name, params, k = SCRIPTED[name]
    model = str(ASSETS / "tinystories-656k")
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = PolicyWithValueHead.from_pretrained(model, tokenizer=tokenizer)
    reference = make_reference(policy)
    prompts = ["the dog ran", "a girl saw the cat in the park", "one day a boy", "the sun was", "happy"]
    env = TokenGenVectorEnv(
        tokenizer,
        prompts,
        happy,
        num_envs=8,
        max_new_tokens=6,
        max_prompt_tokens=12,
        autoreset_mode="disabled",
        copy=False,
        interaction=Chatty(),
        max_turns=4,
        max_episode_tokens=40,
    )
    factory = load_plugins().algorithms[algo_name]
    algorithm = factory(lr=1e-3, minibatch_size=8, **params)
    algorithm.setup(policy, reference)
    collector = RolloutCollector(env, policy, reference, SamplingConfig(), seed=0, samples_per_prompt=k)
    records = []
    for update in range(1, updates + 1):
        batch = collector.collect()
        metrics = algorithm.update(batch)
        rewards = batch.rewards
        metrics["golden/rewards_sum"] = float(rewards.double().sum())
        metrics["golden/action_tokens"] = float(batch.action_mask.sum())
        records.append({"update": update, **metrics})
    return records


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
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                diff = abs(x - y)
                rel = diff / max(abs(x), abs(y), 1e-30)
            else:  # a string, list or null that differs: infinitely far
                diff = rel = math.inf
            if rel >= row["max_rel"]:
                row["max_abs"], row["max_rel"], row["worst"] = diff, rel, key
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--scripted", choices=sorted(SCRIPTED), help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    action.add_argument("--save", metavar="FILE", help="capture the runs and write them to FILE")
    action.add_argument("--compare", metavar="FILE", help="capture the runs and compare them with FILE")
    parser.add_argument("--runs", nargs="+", choices=sorted(ALL_RUNS), default=ALL_RUNS)
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
    if args.scripted:
        Path(args.out).write_text(json.dumps(without_perf(scripted_records(args.scripted, args.updates))))
        return
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
        # a capture saved before a timing key joined WALL_CLOCK still has it: drop it on both sides
        row = compare(without_perf(golden["runs"][name]), without_perf(current[name]), changed)
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
