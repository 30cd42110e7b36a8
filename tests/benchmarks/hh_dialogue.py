"""Multi-turn RLHF on hh-rlhf conversations, measured: SmolLM2-135M-Instruct answers two human turns
of held-out conversations, scored turn by turn by a reward model, before and after PPO.

Usage::

    python tests/benchmarks/hh_dialogue.py [--run-dir DIR] [--write-docs] [overrides...]

One ``textrl experiment=hh_dialogue`` run in ``DIR/pipeline`` (reused when its ``eval.json`` is
there, so a second call only reprints the tables): the reward model trained on hh-rlhf pairs of the
train conversations (``rm``), PPO with the RM's score of each assistant turn as that turn's reward
(``rl``), and the eval of the PPO policy against the starting model on held-out conversations
(``eval``). Prints the RM's held-out pairwise accuracy, the per-turn reward of the reference
(before) and the policy (after) on held-out dialogues, the win rate, KL and lengths, the wall time
of each stage, the RL curve (reward per turn and KL per update) and two transcripts before/after.
``overrides`` go to the run. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from docs_page import add_docs_argument, record_output, write_page  # noqa: E402
from textrl_run import run_textrl  # noqa: E402

STAGES = ("rm", "rl", "eval")
RESULT = {"rm": "summary.json", "rl": "summary.json", "eval": "eval.json"}


def run(root: Path, overrides: list[str]) -> dict[str, float]:
    """Run the pipeline unless its eval is there; returns (and saves) the wall time of each stage
    (s): from the previous stage's result file (the run's start for ``rm``) to this stage's, so
    model loading counts in the stage that loads."""
    walls_path = root / "walls.json"
    if (root / "pipeline" / "eval" / "eval.json").is_file():
        return json.loads(walls_path.read_text()) if walls_path.is_file() else {}
    start = time.time()
    total = run_textrl(
        ["experiment=hh_dialogue", "trainer.progress_bar=false", f"hydra.run.dir={root / 'pipeline'}", *overrides],
        root / "pipeline.log",
    )
    walls, previous = {"total": total}, start
    for stage in STAGES:
        done = (root / "pipeline" / stage / RESULT[stage]).stat().st_mtime
        walls[stage], previous = done - previous, done
    walls_path.write_text(json.dumps(walls, indent=1))
    return walls


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def turn_keys(stats: dict) -> list[str]:
    """``turn_reward_1``, ``turn_reward_2``, ... in turn order."""
    keys = [k for k in stats if k.startswith("turn_reward_") and k.removeprefix("turn_reward_").isdigit()]
    return sorted(keys, key=lambda k: int(k.removeprefix("turn_reward_")))


def transcript(prompt: str, text: str, *, turn_rewards: list[float]) -> str:
    """A transcript with each turn's reward: the env's user turns decoded as ``user``/``assistant``
    lines (special tokens dropped), so the policy's replies are the assistant parts."""
    rewards = iter(turn_rewards)
    parts = text.split("\nuser\n")
    lines = [f"Human: {prompt.strip()}"]
    for i, part in enumerate(parts):
        human, _, reply = part.partition("\nassistant\n") if i else ("", "", part)
        if human:
            lines.append(f"Human: {human.strip()}")
        reward = next(rewards, None)
        label = f"[{reward:+.2f}]" if reward is not None else ""
        lines.append(f"Assistant {label}: {reply.strip()}")
    return "\n".join(lines)


def report(root: Path, walls: dict[str, float]) -> list:
    """Print the tables from the run in ``root``; returns the pictures worth showing."""
    run = root / "pipeline"
    rm, rl, ev = read(run / "rm" / "summary.json"), read(run / "rl" / "summary.json"), read(run / "eval" / "eval.json")
    p, r = ev["policy"], ev["reference"]
    before, after = rm.get("eval_before", {}), rm.get("eval_after", {})
    print("\n### Reward model (hh-rlhf pairs; accuracy on held-out conversations)\n")
    print("| train pairs | held-out pairs | pairwise accuracy before → after training | train time |")
    print("| --- | --- | --- | --- |")
    print(
        f"| {rm['train_examples']} | {rm['eval_examples']} | {100 * before.get('pairwise_accuracy', float('nan')):.1f}% → "
        f"**{100 * after.get('pairwise_accuracy', float('nan')):.1f}%** | {rm['train_time_s'] / 60:.1f} min |"
    )
    print(f"\n### Held-out dialogues ({ev['prompts']} conversations, 2 human turns replayed)\n")
    print("| | before (starting model) | after (PPO) | change |")
    print("| --- | --- | --- | --- |")
    for key in ["turn_reward_mean", *turn_keys(p)]:
        label = "RM reward per turn (mean)" if key == "turn_reward_mean" else f"RM reward, turn {key.rsplit('_', 1)[1]}"
        bold = "**" if key == "turn_reward_mean" else ""
        print(f"| {label} | {r[key]:+.3f} | {bold}{p[key]:+.3f}{bold} | {p[key] - r[key]:+.3f} |")
    print(
        f"| episode reward (sum of turns) | {r['mean_reward']:+.3f} | {p['mean_reward']:+.3f} | {p['mean_reward'] - r['mean_reward']:+.3f} |"
    )
    print(f"| policy turns per episode | {r['turns']:.2f} | {p['turns']:.2f} | |")
    print(f"| policy tokens per episode | {r['mean_length']:.1f} | {p['mean_length']:.1f} | |")
    print(f"| episode tokens (policy + human) | {r['episode_length']:.1f} | {p['episode_length']:.1f} | |")
    print(f"| win rate of PPO vs the starting model | — | **{100 * ev['win_rate']:.1f}%** | |")
    print(f"| KL(PPO ‖ starting model), nats per episode | 0 | {ev['kl']:.3f} | |")
    import yaml

    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text()) if (run / ".hydra").is_dir() else {}
    budget = cfg.get("env", {}).get("max_new_tokens", "env.max_new_tokens")
    print(
        f"\nEpisodes that reached the second human turn: {100 * (r['turns'] - 1):.0f}% (starting model), "
        f"{100 * (p['turns'] - 1):.0f}% (PPO). A reply still going at {budget} tokens (the turn budget) "
        "truncates the episode, so the win rate and the episode reward (a sum over turns) also count "
        f"turns reached; the reward per turn compares replies. The RM's held-out accuracy is measured on "
        f"{rm['eval_examples']} pairs (±{100 * (0.25 / max(rm['eval_examples'], 1)) ** 0.5 * 2:.0f} points, 95%)."
    )
    metrics = rows(run / "rl" / "metrics.jsonl")
    print("\n### PPO, per update (train conversations)\n")
    print("| update | " + " | ".join(str(i + 1) for i in range(len(metrics))) + " |")
    print("| --- " * (len(metrics) + 1) + "|")
    for key, label, fmt in (
        ("turn/reward_mean", "reward per turn", "+.2f"),
        ("objective/kl", "KL (nats)", ".2f"),
        ("kl/beta", "β", ".3f"),
    ):
        print(f"| {label} | " + " | ".join(f"{m[key]:{fmt}}" if key in m else "—" for m in metrics) + " |")
    print("\n### Wall time (2-core CPU)\n")
    print("| stage | what | wall time |")
    print("| --- | --- | --- |")
    what = {
        "rm": f"RM: {rm['train_examples']} pairs, eval on {rm['eval_examples']} held-out pairs before and after",
        "rl": f"PPO: {rl['updates']} updates × {rl['episodes'] // max(rl['updates'], 1)} two-turn episodes",
        "eval": f"eval: {ev['prompts']} held-out conversations, PPO policy and starting model",
    }
    for stage, text in what.items():
        wall = walls.get(stage)
        print(f"| {stage} | {text} | {wall / 60:.1f} min |" if wall else f"| {stage} | {text} | (reused) |")
    if walls.get("total"):
        print(f"| total | one `textrl experiment=hh_dialogue` | {walls['total'] / 60:.1f} min |")
    print(
        "\n### Transcripts (held-out): starting model → after PPO, each reply's RM reward in brackets "
        "(the conversation that got furthest, and the largest gain)\n"
    )
    samples = rows(run / "eval" / "eval_samples.jsonl")
    turns = lambda s: max(len(s.get("policy_turn_rewards", [])), len(s.get("reference_turn_rewards", [])))  # noqa: E731
    longest = max(samples, key=turns)  # a conversation that reached its second human turn, if any did
    gain = max((s for s in samples if s is not longest), key=lambda s: s["policy_reward"] - s["reference_reward"])
    for s in (longest, gain):
        print("```text")
        print(f"--- before (episode reward {s['reference_reward']:+.2f})")
        print(transcript(s["prompt"], s["reference"], turn_rewards=s.get("reference_turn_rewards", [])))
        print(f"--- after PPO (episode reward {s['policy_reward']:+.2f})")
        print(transcript(s["prompt"], s["policy"], turn_rewards=s.get("policy_turn_rewards", [])))
        print("```")
    return [("ppo", run / "rl" / "report.png"), ("eval", run / "eval" / "eval_report.png")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where the run goes (default: a temporary folder)")
    add_docs_argument(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the run")
    args = parser.parse_args()
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="hh-dialogue-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    walls = run(root, args.overrides)
    if not args.write_docs:
        report(root, walls)
        return
    with record_output() as printed:
        pictures = report(root, walls)
    write_page(
        "hh-dialogue",
        title="Multi-turn RLHF on hh-rlhf dialogues: RM → PPO with per-turn rewards on the CPU",
        tables=[printed.text],
        pictures=pictures,
        notes="SmolLM2-135M-Instruct answers the first two human turns of hh-rlhf (harmless-base) "
        "conversations; the dialogue interaction replays the human turns. A reward model trained by "
        "`stage=rm` on chosen/rejected pairs of the *train* conversations scores each assistant reply "
        "in context (`env.turn_reward=model`), and PPO's GAE sees that score on the reply's last token. "
        "Evaluation uses *held-out* conversations (split by a hash of the first human turn; "
        "`hh_dialogues:heldout`), the same ones the RM's accuracy is measured on. A short run: "
        "the numbers show the pipeline working end to end, not a converged policy.",
    )


if __name__ == "__main__":
    main()
