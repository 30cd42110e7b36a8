"""The calculator tool task, measured: held-out accuracy of SmolLM2-135M-Instruct before and after
SFT and RL (PPO, and RLOO).

Usage::

    python tests/benchmarks/calculator.py [--run-dir DIR] [--write-docs] [overrides...]

Phases (each a ``textrl`` run in ``DIR``; a phase whose result is already there is reused, so a
second call only reprints the table):

1. ``pipeline``: ``textrl experiment=calculator`` — SFT on tool-use demonstrations, PPO against the
   exact-answer reward, eval of the PPO policy against the SFT model (``pipeline/{sft,rl,eval}``);
2. ``rloo``: RL from the same SFT model with ``algo=reinforce algo.baseline=leave_one_out`` (RLOO,
   k = 4 samples per prompt), then its eval against the base model with the tool prompt;
3. ``two_shot``: the base model with the tool and a two-shot tool prompt (the system prompt plus
   two worked examples, one- and two-step);
4. ``no_tool``: the base model without the tool (no calculator, a system prompt asking only for
   ``Answer: NUMBER``).

Every eval scores the same ``eval.num_prompts`` held-out problems (``arithmetic:heldout``, drawn
with the run's seed). Prints the accuracy table with the tool-call rate, turns and lengths, the
wall time of each phase, the RL learning curves (accuracy per update) and three transcripts
(base with the tool prompt → after SFT → after PPO). ``overrides`` go to every run. Not collected
by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from docs_page import add_docs_argument, commit, record_output, write_page  # noqa: E402
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


def run_phases(root: Path, overrides: list[str]) -> dict[str, float]:
    """Run the phases whose results are missing; returns (and saves) the wall time of each (s)."""
    walls_path = root / "walls.json"
    walls = json.loads(walls_path.read_text()) if walls_path.is_file() else {}
    base, gguf = base_policy(overrides)
    sft = root / "pipeline" / "sft" / "model"
    common = ["experiment=calculator", "trainer.progress_bar=false", *overrides]
    phases = {
        "pipeline": (root / "pipeline" / "eval" / "eval.json", [[f"hydra.run.dir={root / 'pipeline'}"]]),
        "rloo": (
            root / "rloo" / "eval" / "eval.json",
            [
                [
                    "stage=rl",
                    *RLOO,
                    f"policy.model={sft}",
                    "policy.gguf_file=null",
                    f"hydra.run.dir={root / 'rloo' / 'rl'}",
                ],
                [
                    "stage=eval",
                    f"policy.model={root / 'rloo' / 'rl' / 'policy'}",
                    "policy.gguf_file=null",
                    f"eval.reference={base}",
                    f"eval.reference_gguf_file={gguf or 'null'}",
                    f"hydra.run.dir={root / 'rloo' / 'eval'}",
                ],
            ],
        ),
        "two_shot": (
            root / "two_shot" / "eval.json",
            [["stage=eval", f"data.system_prompt='{TWO_SHOT_PROMPT}'", f"hydra.run.dir={root / 'two_shot'}"]],
        ),
        "no_tool": (
            root / "no_tool" / "eval.json",
            [
                [
                    "stage=eval",
                    "~interaction",
                    f"data.system_prompt='{NO_TOOL_PROMPT}'",
                    f"hydra.run.dir={root / 'no_tool'}",
                ]
            ],
        ),
    }
    for name, (result, runs) in phases.items():
        if result.is_file():
            continue
        walls[name] = sum(run_textrl(common + run, root / f"{name}-{i}.log") for i, run in enumerate(runs))
        walls.setdefault("commits", {})[name] = commit()  # the code each phase ran
        walls_path.write_text(json.dumps(walls, indent=1))
    return walls


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def curve(run: Path) -> list[float]:
    """Training accuracy (``reward/correct``) per update of an RL run."""
    return [json.loads(line)["reward/correct"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def report(root: Path, walls: dict[str, float]) -> list[Path]:
    """Print the tables from the runs in ``root``; returns the pictures worth showing."""
    ppo, rloo, two_shot, no_tool = (
        read(root / p)
        for p in ("pipeline/eval/eval.json", "rloo/eval/eval.json", "two_shot/eval.json", "no_tool/eval.json")
    )
    rows = [
        ("base model, no tool", no_tool["policy"], "—"),
        ("base model, tool prompt", rloo["reference"], "—"),
        ("base model, two-shot tool prompt", two_shot["policy"], "—"),
        ("after SFT", ppo["reference"], "—"),
        ("after RL: PPO", ppo["policy"], f"{ppo['kl']:.2f}"),
        ("after RL: RLOO", rloo["policy"], "—"),
    ]
    n = ppo["prompts"]
    print(f"\n### Held-out accuracy ({n} problems, arithmetic:heldout)\n")
    print("| model | accuracy | tool-call rate | policy turns | policy tokens | episode tokens | KL to SFT (nats) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s, kl in rows:
        print(
            f"| {name} | **{100 * s['accuracy']:.1f}%** | {100 * s.get('tool_call_rate', 0):.0f}% | "
            f"{s.get('turns', 1):.2f} | {s['mean_length']:.1f} | {s.get('episode_length', s['mean_length']):.1f} | {kl} |"
        )
    sft_acc, ppo_acc = ppo["reference"]["accuracy"], ppo["policy"]["accuracy"]
    print(
        f"\nPPO adds {100 * (ppo_acc - sft_acc):+.1f} points over SFT; error rate "
        f"{100 * (1 - sft_acc):.1f}% → {100 * (1 - ppo_acc):.1f}% "
        f"({(1 - ppo_acc) / max(1 - sft_acc, 1e-9):.2f}×). RLOO: {100 * (rloo['policy']['accuracy'] - sft_acc):+.1f} points."
    )
    sft = read(root / "pipeline" / "sft" / "summary.json")
    print("\n### Wall time (2-core CPU)\n")
    print("| phase | what | wall time | commit |")
    print("| --- | --- | --- | --- |")
    what = {
        "pipeline": f"SFT ({sft['train_examples']} demonstrations, {sft['steps']} steps) → PPO "
        f"({len(curve(root / 'pipeline' / 'rl'))} updates) → eval vs SFT",
        "rloo": f"RLOO ({len(curve(root / 'rloo' / 'rl'))} updates) → eval vs the base model",
        "two_shot": "eval of the base model with a two-shot tool prompt",
        "no_tool": "eval of the base model without the tool",
    }
    for name, text in what.items():
        wall = walls.get(name)
        ran_at = walls.get("commits", {}).get(name, "?")
        print(
            f"| {name} | {text} | {wall / 60:.1f} min | `{ran_at}` |" if wall else f"| {name} | {text} | (reused) | |"
        )
    if all(walls.get(k) for k in what):
        print(f"| total | | {sum(walls[k] for k in what) / 60:.1f} min | |")
    print("\n### Training accuracy per update (rollout batches, train split)\n")
    print("| update | " + " | ".join(str(i + 1) for i in range(len(curve(root / "pipeline" / "rl")))) + " |")
    print("| --- " * (len(curve(root / "pipeline" / "rl")) + 1) + "|")
    for name in ("pipeline", "rloo"):
        label = "PPO" if name == "pipeline" else "RLOO"
        print(f"| {label} | " + " | ".join(f"{100 * v:.0f}%" for v in curve(root / name / "rl")) + " |")
    print("\n### Transcripts (held-out): base model with the tool prompt → after SFT → after PPO\n")
    base = {r["prompt"]: r for r in map(json.loads, (root / "rloo/eval/eval_samples.jsonl").read_text().splitlines())}
    after = [json.loads(line) for line in (root / "pipeline/eval/eval_samples.jsonl").read_text().splitlines()]
    shown = [r for r in after if r["policy_reward"] > r["reference_reward"]][:2] + after[:1]
    for r in shown:
        print("```text")
        print(f"problem: {r['prompt']}")
        if r["prompt"] in base:
            print(f"base ({base[r['prompt']]['reference_reward']:.0f}): {base[r['prompt']]['reference']!r}")
        print(f"SFT  ({r['reference_reward']:.0f}): {r['reference']!r}")
        print(f"PPO  ({r['policy_reward']:.0f}): {r['policy']!r}")
        print("```")
    return [
        ("sft", root / "pipeline" / "sft" / "report.png"),
        ("ppo", root / "pipeline" / "rl" / "report.png"),
        ("rloo", root / "rloo" / "rl" / "report.png"),
        ("eval", root / "pipeline" / "eval" / "eval_report.png"),
    ]


NOTES = """SmolLM2-135M-Instruct learns to hand arithmetic word problems to the `calculator`
interaction and copy the result. Accuracy is the exact match of `Answer: N` on held-out problems
(`arithmetic:heldout`, disjoint from the training problems), greedy decoding. Settings:
`conf/experiment/calculator.yaml` (SFT on the demonstrations of 64 training problems, 1 epoch;
PPO and RLOO 6 updates of 32 episodes, up to 3 turns of 24 tokens). The wall times were measured
with other jobs sharing the 2 cores (load about 3), so they are upper bounds. The two-shot tool
prompt puts two worked examples in the system message; the base model still writes no well-formed
call, so the base model's tool use starts from nothing and SFT supplies the format."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where the runs go (default: a temporary folder)")
    add_docs_argument(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="calculator-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    walls = run_phases(root, args.overrides)
    if not args.write_docs:
        report(root, walls)
        return
    with record_output() as printed:
        pictures = report(root, walls)
    write_page(
        "calculator",
        title="Calculator tool task: SFT → RL on the CPU",
        tables=[printed.text],
        pictures=pictures,
        notes=NOTES,
    )


if __name__ == "__main__":
    main()
