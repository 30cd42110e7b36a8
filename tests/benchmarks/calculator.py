"""The calculator tool task, measured: held-out accuracy of SmolLM2-135M-Instruct before and after
SFT and RL (PPO, and RLOO), on problems held out by numbers and on problems held out by wording.

Usage::

    python tests/benchmarks/calculator.py [--run-dir DIR] [--seeds N | --seed-list 0,1,2]
        [--baseline-seeds K] [--write-docs] [overrides...]

Runs (each a recorded run ``DIR/seed<k>/<phase>``, see ``protocol.py``; a finished one is reused,
so a second call only reprints the tables):

1. ``pipeline`` (every seed): ``textrl experiment=calculator`` — SFT on tool-use demonstrations,
   PPO against the exact-answer reward, eval of the PPO policy against the SFT model
   (``pipeline/{sft,rl,eval}``) — then the same eval on ``arithmetic:heldout_wording``
   (``pipeline/eval_wording``);
2. ``rloo`` (the first ``K`` seeds): RL from that seed's SFT model with ``algo=reinforce
   algo.baseline=leave_one_out`` (RLOO, k = 4 samples per prompt), then its evals against the
   base model with the tool prompt;
3. ``two_shot`` (the first ``K`` seeds): evals of the base model with the tool and a two-shot tool
   prompt (the system prompt plus two worked examples, one- and two-step);
4. ``no_tool`` (the first ``K`` seeds): evals of the base model without the tool (no calculator, a
   system prompt asking only for ``Answer: NUMBER``).

Every eval scores ``eval.num_prompts`` problems drawn with the run's seed from each held-out split:
``arithmetic:heldout`` (new numbers in the training sentences) and ``arithmetic:heldout_wording``
(new numbers in scenes and sentences training never shows). Prints the accuracy table on both
splits with the tool-call rate, turns and lengths (mean over seeds, with a 95% bootstrap interval
where a row has 2 or more seeds), the per-seed table of the PPO and SFT accuracies, the wall time
of each run, the RL learning curves (accuracy per update) and transcripts (base with the tool
prompt → after SFT → after PPO); draws ``DIR/curves.png`` (training accuracy and KL per update,
mean over seeds with a min–max band). ``overrides`` go to every run. Durations on the 2-core CPU
(the page of 2026-12-06, one seed): pipeline 28 min, RLOO 12 min, two-shot eval 6 min, no-tool
eval 3 min; the evals on ``heldout_wording`` add about as much as each phase's eval again (a
``pipeline`` seed ≈ 35 min, the ``K`` baseline seeds ≈ 35 min each). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from docs_page import add_docs_argument, record_output, write_page  # noqa: E402
from protocol import (  # noqa: E402
    INTERVAL_NOTE,
    Panel,
    ProtocolError,
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

NO_TOOL_PROMPT = "Solve the problem. Reply with the final result as Answer: NUMBER"
# the calculator experiment's system prompt plus two worked examples (not drawn from either split)
TWO_SHOT_PROMPT = (
    "Use the calculator: write <calc>EXPRESSION</calc> and the result comes back. Then reply Answer: NUMBER. "
    "Example 1. User: A farmer plants 14 rows with 23 trees in each row. How many trees are there? "
    "You: <calc>14*23</calc> Tool: 322 You: Answer: 322. "
    "Example 2. User: A store has 12 boxes with 31 pencils in each box and 17 more pencils on the counter. "
    "How many pencils are there? You: <calc>12*31+17</calc> Tool: 389 You: Answer: 389"
)
RLOO = [
    "algo=reinforce",
    "algo.baseline=leave_one_out",
    "rollout.samples_per_prompt=4",
    "algo.epochs=1",
    "algo.lr=2.0e-5",
]
SPLITS = {"eval": "arithmetic:heldout", "eval_wording": "arithmetic:heldout_wording"}
"""Eval directory → the held-out split it scores (``eval.prompts``)."""
PHASES = ("pipeline", "rloo", "two_shot", "no_tool")


def base_policy(overrides: list[str]) -> tuple[str, str | None]:
    """``(policy.model, policy.gguf_file)`` of the base model, composed as ``textrl`` composes them."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(load_plugins())
    with initialize_config_module("textrl.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=calculator", *overrides])
    return OmegaConf.select(cfg, "policy.model"), OmegaConf.select(cfg, "policy.gguf_file")


def evals(run: Path, args: list[str]) -> list[list[str]]:
    """``stage=eval ARGS`` once per held-out split (:data:`SPLITS`), into ``run/eval`` and
    ``run/eval_wording``."""
    return [
        ["stage=eval", *args, f"eval.prompts={split}", f"hydra.run.dir={run / name}"] for name, split in SPLITS.items()
    ]


def phase_commands(root: Path, seed: int, *, base: tuple[str, str | None]) -> dict[str, list[list[str]]]:
    """The ``textrl`` argument lists of each phase of seed ``seed`` (without the common ones)."""
    model, gguf = base
    run = {phase: seed_dir(root, seed) / phase for phase in PHASES}
    pipeline = run["pipeline"]
    base_reference = [f"eval.reference={model}", f"eval.reference_gguf_file={gguf or 'null'}"]
    return {
        "pipeline": [
            [f"hydra.run.dir={pipeline}"],
            [
                "stage=eval",
                f"policy.model={pipeline / 'rl' / 'policy'}",
                "policy.gguf_file=null",
                f"eval.reference={pipeline / 'sft' / 'model'}",
                "eval.reference_gguf_file=null",
                f"eval.prompts={SPLITS['eval_wording']}",
                f"hydra.run.dir={pipeline / 'eval_wording'}",
            ],
        ],
        "rloo": [
            [
                "stage=rl",
                *RLOO,
                f"policy.model={pipeline / 'sft' / 'model'}",
                "policy.gguf_file=null",
                f"hydra.run.dir={run['rloo'] / 'rl'}",
            ],
            *evals(
                run["rloo"], [f"policy.model={run['rloo'] / 'rl' / 'policy'}", "policy.gguf_file=null", *base_reference]
            ),
        ],
        "two_shot": evals(run["two_shot"], [f"data.system_prompt='{TWO_SHOT_PROMPT}'"]),
        "no_tool": evals(
            run["no_tool"],
            [
                "~interaction",
                "env.max_turns=1",
                "env.max_episode_tokens=null",
                f"data.system_prompt='{NO_TOOL_PROMPT}'",
            ],
        ),
    }


def run_all(root: Path, seeds: list[int], *, baseline_seeds: list[int], overrides: list[str]) -> dict:
    """Run (or reuse) every phase: ``pipeline`` for ``seeds``, the others for ``baseline_seeds``.
    Returns ``{phase: {seed: run record}}``."""
    base = base_policy(overrides)
    common = ["experiment=calculator", "trainer.progress_bar=false", *overrides]
    records: dict[str, dict[int, dict]] = {phase: {} for phase in PHASES}
    for phase in PHASES:
        for seed in seeds if phase == "pipeline" else baseline_seeds:
            commands = phase_commands(root, seed, base=base)[phase]
            records[phase][seed] = run_recorded(
                seed_dir(root, seed) / phase,
                seed=seed,
                commands=[[*common, *c, f"seed={seed}"] for c in commands],
                run_command=run_textrl,
            )
    return records


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curve(run: Path, key: str = "reward/correct") -> list[float]:
    """``key`` per update of an RL run (default: training accuracy)."""
    return [r.get(key, float("nan")) for r in jsonl(run / "metrics.jsonl")]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def accuracy_cell(values: list[float]) -> str:
    """Per-seed accuracies (fractions) as ``**84.5%**``, with ``[80.0, 88.5]`` (the 95% interval
    over seeds, percentage points) when there are 2 or more."""
    iv = mean_interval([100 * v for v in values])
    interval = f" [{iv.low:.1f}, {iv.high:.1f}]" if iv.low is not None else ""
    return f"**{iv.mean:.1f}%**{interval}"


def report(root: Path, seeds: list[int], *, baseline_seeds: list[int], records: dict) -> list:
    """Print the tables from the runs in ``root``; draws ``root / "curves.png"`` and returns the
    pictures worth showing."""
    at = lambda seed, phase, *rest: seed_dir(root, seed).joinpath(phase, *rest)  # noqa: E731
    result = {  # (phase, eval dir) → seed → eval.json
        (phase, name): {s: read(at(s, phase, name, "eval.json")) for s in ran}
        for phase, ran in (("pipeline", seeds), *((p, baseline_seeds) for p in PHASES[1:]))
        for name in SPLITS
    }
    rows = [  # label, phase, side ("policy"/"reference"), KL shown
        ("base model, no tool", "no_tool", "policy", False),
        ("base model, tool prompt", "rloo", "reference", False),
        ("base model, two-shot tool prompt", "two_shot", "policy", False),
        ("after SFT", "pipeline", "reference", False),
        ("after RL: PPO", "pipeline", "policy", True),
        ("after RL: RLOO", "rloo", "policy", False),
    ]
    n = {name: result[("pipeline", name)][seeds[0]]["prompts"] for name in SPLITS}
    print(
        f"\n### Held-out accuracy ({n['eval']} problems from `arithmetic:heldout`: new numbers; "
        f"{n['eval_wording']} from `arithmetic:heldout_wording`: new numbers in new scenes and sentences)\n"
    )
    print(
        "| model | seeds | accuracy, new numbers | accuracy, new wording | tool-call rate | policy turns | "
        "policy tokens | episode tokens | KL to SFT (nats) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, phase, side, kl in rows:
        numbers, wording = result[(phase, "eval")], result[(phase, "eval_wording")]
        stats = [numbers[s][side] for s in numbers]
        kl_cell = f"{mean(numbers[s]['kl'] for s in numbers):.2f}" if kl else "—"
        print(
            f"| {label} | {len(stats)} | {accuracy_cell([x['accuracy'] for x in stats])} | "
            f"{accuracy_cell([wording[s][side]['accuracy'] for s in wording])} | "
            f"{100 * mean(x.get('tool_call_rate', 0) for x in stats):.0f}% | {mean(x.get('turns', 1) for x in stats):.2f} | "
            f"{mean(x['mean_length'] for x in stats):.1f} | "
            f"{mean(x.get('episode_length', x['mean_length']) for x in stats):.1f} | {kl_cell} |"
        )
    print(
        "\nAccuracy: mean over the seeds of the row, with its 95% interval in brackets (percentage points) "
        "where the row has 2 or more seeds; the other columns are means over the same seeds, on the "
        "new-numbers split."
    )
    pipeline = {name: result[("pipeline", name)] for name in SPLITS}
    accuracy = lambda name, side: [100 * pipeline[name][s][side]["accuracy"] for s in seeds]  # noqa: E731
    print(f"\n### SFT and PPO per seed (accuracy, %; {len(seeds)} seed{'s' if len(seeds) > 1 else ''})\n")
    per_split = []
    for name, what in (("eval", "new numbers"), ("eval_wording", "new wording")):
        sft, ppo = accuracy(name, "reference"), accuracy(name, "policy")
        per_split += [
            SeedRow(f"after SFT, {what}", sft, ".1f"),
            SeedRow(f"after PPO, {what}", ppo, ".1f"),
            SeedRow(f"PPO − SFT, {what} (points)", [b - a for a, b in zip(sft, ppo)], "+.1f"),
        ]
    per_split.append(SeedRow("KL(PPO ‖ SFT), new numbers (nats)", [pipeline["eval"][s]["kl"] for s in seeds], ".2f"))
    print(seed_table(per_split, seeds=seeds))
    print(f"\n{INTERVAL_NOTE}")
    for name, what in (("eval", "new numbers"), ("eval_wording", "new wording")):
        sft, ppo = mean(accuracy(name, "reference")), mean(accuracy(name, "policy"))
        rloo = mean(100 * result[("rloo", name)][s]["policy"]["accuracy"] for s in baseline_seeds)
        sft_b = mean(accuracy(name, "reference")[seeds.index(s)] for s in baseline_seeds)
        print(
            f"\n{what.capitalize()}: PPO adds {ppo - sft:+.1f} points over SFT (mean over seeds); error rate "
            f"{100 - sft:.1f}% → {100 - ppo:.1f}% ({(100 - ppo) / max(100 - sft, 1e-9):.2f}×). "
            f"RLOO: {rloo - sft_b:+.1f} points over the SFT model it started from."
        )
    sft_summary = read(at(seeds[0], "pipeline", "sft", "summary.json"))
    updates = {p: len(curve(at(seeds[0], p, "rl"))) for p in ("pipeline", "rloo")}
    print("\n### Wall time (2-core CPU), minutes per run\n")
    print("| run | what | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("| --- " * (len(seeds) + 2) + "|")
    what = {
        "pipeline": f"SFT ({sft_summary['train_examples']} demonstrations, {sft_summary['steps']} steps) → PPO "
        f"({updates['pipeline']} updates) → evals vs SFT on both splits",
        "rloo": f"RLOO ({updates['rloo']} updates) → evals vs the base model on both splits",
        "two_shot": "evals of the base model with a two-shot tool prompt on both splits",
        "no_tool": "evals of the base model without the tool on both splits",
    }
    for phase, text in what.items():
        cells = [f"{records[phase][s]['wall_s'] / 60:.1f}" if s in records[phase] else "—" for s in seeds]
        print(f"| {phase} | {text} | " + " | ".join(cells) + " |")
    totals = [sum(records[p][s]["wall_s"] for p in PHASES if s in records[p]) / 60 for s in seeds]
    print("| total | | " + " | ".join(f"{t:.1f}" for t in totals) + " |")
    print("\n### Training accuracy per update (rollout batches, train split)\n")
    print("| run | " + " | ".join(str(i + 1) for i in range(updates["pipeline"])) + " |")
    print("| --- " * (updates["pipeline"] + 1) + "|")
    training = {
        "PPO": {s: curve(at(s, "pipeline", "rl")) for s in seeds},
        "RLOO": {s: curve(at(s, "rloo", "rl")) for s in baseline_seeds},
    }
    for label, by_seed in training.items():
        for s, values in by_seed.items():
            print(f"| {label}, seed {s} | " + " | ".join(f"{100 * v:.0f}%" for v in values) + " |")
    curves = plot_seed_curves(
        root / "curves.png",
        panels=[
            Panel("training accuracy (reward/correct)", {k: list(v.values()) for k, v in training.items()}),
            Panel(
                "KL to the SFT model (nats per episode)",
                {
                    "PPO": [curve(at(s, "pipeline", "rl"), "objective/kl") for s in seeds],
                    "RLOO": [curve(at(s, "rloo", "rl"), "objective/kl") for s in baseline_seeds],
                },
            ),
        ],
        title="Calculator task: RL from the SFT model",
    )
    print(f"\ncurves: {curves}")
    seed = baseline_seeds[0]
    print(f"\n### Transcripts (seed {seed}): base model with the tool prompt → after SFT → after PPO\n")
    for name, what in (("eval", "new numbers"), ("eval_wording", "new wording")):
        base = {r["prompt"]: r for r in jsonl(at(seed, "rloo", name, "eval_samples.jsonl"))}
        after = jsonl(at(seed, "pipeline", name, "eval_samples.jsonl"))
        shown = [r for r in after if r["policy_reward"] > r["reference_reward"]][:1] + after[:1]
        for r in shown:
            print("```text")
            print(f"problem ({what}): {r['prompt']}")
            if r["prompt"] in base:
                print(f"base ({base[r['prompt']]['reference_reward']:.0f}): {base[r['prompt']]['reference']!r}")
            print(f"SFT  ({r['reference_reward']:.0f}): {r['reference']!r}")
            print(f"PPO  ({r['policy_reward']:.0f}): {r['policy']!r}")
            print("```")
    return [("curves", curves)]


NOTES = """SmolLM2-135M-Instruct learns to hand arithmetic word problems to the `calculator`
interaction and copy the result. Accuracy is the exact match of `Answer: N`, greedy decoding, on
two held-out splits: `arithmetic:heldout` (problems whose numbers never occur in training, written
in the training sentences) and `arithmetic:heldout_wording` (held-out numbers in six scenes and
sentence templates that training never shows, with the same answer format and mix of one- and
two-step problems). Settings: `conf/experiment/calculator.yaml` (SFT on the demonstrations of 64
training problems, 1 epoch; PPO and RLOO 6 updates of 32 episodes, up to 3 turns of 24 tokens).
PPO runs with every seed; RLOO and the base-model rows with the seeds their row names. The
two-shot tool prompt puts two worked examples in the system message."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where the runs go (default: a temporary folder)")
    add_seed_arguments(parser)
    parser.add_argument(
        "--baseline-seeds",
        type=int,
        default=1,
        help="run RLOO and the base-model evals with the first K seeds only (default 1)",
    )
    add_docs_argument(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    seeds = seeds_of(args)
    if not 1 <= args.baseline_seeds <= len(seeds):
        raise ProtocolError(f"--baseline-seeds: got {args.baseline_seeds}; expected 1 to {len(seeds)} (the seeds run)")
    baseline_seeds = seeds[: args.baseline_seeds]
    if args.write_docs:
        require_clean_tree()  # refuse now rather than after the runs
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="calculator-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    records = run_all(root, seeds, baseline_seeds=baseline_seeds, overrides=args.overrides)
    context = dict(baseline_seeds=baseline_seeds, records=records)
    if not args.write_docs:
        report(root, seeds, **context)
        return
    with record_output() as printed:
        pictures = report(root, seeds, **context)
    write_page(
        "calculator",
        title="Calculator tool task: SFT → RL on the CPU",
        tables=[printed.text],
        pictures=pictures,
        notes=NOTES,
        runs=[seed_dir(root, s) / p for p in PHASES for s in (seeds if p == "pipeline" else baseline_seeds)],
        run_dir=root,
    )


if __name__ == "__main__":
    main()
