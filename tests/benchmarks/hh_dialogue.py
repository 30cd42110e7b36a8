"""Multi-turn RLHF on hh-rlhf conversations, measured over seeds: SmolLM2-135M-Instruct answers two
human turns of held-out conversations, scored turn by turn by a reward model, before and after PPO.

Usage::

    python tests/benchmarks/hh_dialogue.py [--run-dir DIR] [--seeds N | --seed-list 0,1,2] [--write-docs] [overrides...]

Recorded runs (see ``protocol.py``; a finished one is reused, so a second call only reprints the
tables): ``DIR/rm``, the reward model trained once by ``textrl experiment=hh_dialogue stage=rm`` on
hh-rlhf pairs of the train conversations and measured on the held-out ones (its pairwise accuracy
with a 95% binomial interval over the pairs, ``scipy.stats.binomtest``); then per seed
``DIR/seed<k>``: PPO with that RM's score of each assistant turn as the turn's reward (``rl``) and
the eval of the PPO policy against the starting model on held-out conversations (``eval``).
Prints, per seed with the mean and a 95% bootstrap interval over seeds, the per-turn reward of the
reference (before) and the policy (after), the share of episodes reaching each human turn and cut at
a budget, the win rate, KL and lengths; the wall time of each run; the RL curve (reward per turn, KL
and β per update) and two transcripts before/after (the first seed's); draws ``DIR/curves.png``
(mean over seeds with a min–max band). ``overrides`` go to every run. Not collected by pytest.
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
    SeedRow,
    add_seed_arguments,
    mean_interval,
    plot_seed_curves,
    read_record,
    require_clean_tree,
    run_recorded,
    seed_dir,
    seed_table,
    seeds_of,
)
from textrl_run import run_textrl  # noqa: E402


def base_policy(overrides: list[str]) -> tuple[str, str | None]:
    """``(policy.model, policy.gguf_file)`` of the starting model, composed as ``textrl`` composes them."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(load_plugins())
    with initialize_config_module("textrl.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=hh_dialogue", *overrides])
    return OmegaConf.select(cfg, "policy.model"), OmegaConf.select(cfg, "policy.gguf_file")


def commands_of(root: Path, seed: int, overrides: list[str]) -> list[list[str]]:
    """The ``textrl`` argument lists of seed ``seed``: PPO against the shared RM, then the eval (the
    seed last, so it is the seed that runs)."""
    run, rm = seed_dir(root, seed), root / "rm" / "model"
    model, gguf = base_policy(overrides)
    common = ["experiment=hh_dialogue", "trainer.progress_bar=false", f"reward.model={rm}", *overrides]
    return [
        [*common, "stage=rl", f"hydra.run.dir={run / 'rl'}", f"seed={seed}"],
        [
            *common,
            "stage=eval",
            f"policy.model={run / 'rl' / 'policy'}",
            "policy.gguf_file=null",
            f"eval.reference={model}",
            f"eval.reference_gguf_file={gguf or 'null'}",
            f"hydra.run.dir={run / 'eval'}",
            f"seed={seed}",
        ],
    ]


def rm_accuracy_interval(summary: dict) -> tuple[float, float, float, int]:
    """``(accuracy, low, high, pairs)``: the RM's held-out pairwise accuracy after training with a
    95% Clopper-Pearson interval over the pairs (``scipy.stats.binomtest``)."""
    from scipy.stats import binomtest

    pairs = summary["eval_examples"]
    accuracy = summary["eval_after"]["pairwise_accuracy"]
    interval = binomtest(round(accuracy * pairs), pairs).proportion_ci(confidence_level=0.95)
    return accuracy, interval.low, interval.high, pairs


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def turn_keys(stats: dict) -> list[str]:
    """``turn_reward_1``, ``turn_reward_2``, ... in turn order."""
    keys = [k for k in stats if k.startswith("turn_reward_") and k.removeprefix("turn_reward_").isdigit()]
    return sorted(keys, key=lambda k: int(k.removeprefix("turn_reward_")))


def turns_by_seed(ev: dict, seeds: list[int]) -> str:
    """Markdown table, one row per seed: each turn's mean RM reward before (the reference) and after
    (the policy), the share of episodes reaching the second human turn and the share a budget cut;
    ``—`` for a turn no episode of that seed and model reached. ``ev[seed]`` is that seed's
    ``eval.json``."""
    turns = turn_keys({k: None for s in seeds for m in ("reference", "policy") for k in ev[s][m]})
    head = [f"turn {k.rsplit('_', 1)[1]} reward, {when}" for k in turns for when in ("before", "after")]
    head += ["second turn reached, before → after (%)", "cut at the budget, before → after (%)"]
    lines = ["| seed | " + " | ".join(head) + " |", "| --- " * (len(head) + 1) + "|"]
    for s in seeds:
        before, after = ev[s]["reference"], ev[s]["policy"]
        cells = [f"{m[k]:+.2f}" if k in m else "—" for k in turns for m in (before, after)]
        cells.append(f"{100 * (before['turns'] - 1):.0f} → {100 * (after['turns'] - 1):.0f}")
        if "cut_at_budget" in before and "cut_at_budget" in after:
            cells.append(f"{100 * before['cut_at_budget']:.0f} → {100 * after['cut_at_budget']:.0f}")
        else:
            cells.append("—")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def report(root: Path, seeds: list[int]) -> list:
    """Print the tables from the runs in ``root / "seed<k>"``; draws ``root / "curves.png"`` and
    returns the pictures worth showing."""
    import yaml

    run = {s: seed_dir(root, s) for s in seeds}
    rm = read(root / "rm" / "summary.json")
    rl = {s: read(run[s] / "rl" / "summary.json") for s in seeds}
    ev = {s: read(run[s] / "eval" / "eval.json") for s in seeds}
    first = seeds[0]
    plural = "s" if len(seeds) > 1 else ""
    cell = lambda values, spec="+.3f": mean_interval(values).format(spec)  # noqa: E731
    accuracy, low, high, pairs = rm_accuracy_interval(rm)
    before = 100 * rm["eval_before"]["pairwise_accuracy"]
    print("\n### Reward model (hh-rlhf pairs; accuracy on held-out conversations), one for every seed\n")
    print("| | held-out pairwise accuracy | 95% interval (Clopper-Pearson, over the pairs) |")
    print("| --- | --- | --- |")
    print(f"| before training | {before:.1f}% | |")
    print(f"| **after training** | **{100 * accuracy:.1f}%** | [{100 * low:.1f}%, {100 * high:.1f}%] |")
    print(
        f"\n{rm['train_examples']} train pairs, {pairs} held-out pairs; trained in "
        f"{rm['train_time_s'] / 60:.1f} min (the `rm` run's training alone)."
    )
    print(f"\n### Held-out dialogues ({ev[first]['prompts']} conversations, 2 human turns replayed)\n")
    print(f"Mean over {len(seeds)} seed{plural} [95% interval].\n")
    print("| | before (starting model) | after (PPO) | change |")
    print("| --- | --- | --- | --- |")
    both = lambda key: ([ev[s]["reference"][key] for s in seeds], [ev[s]["policy"][key] for s in seeds])  # noqa: E731
    change = lambda before, after: cell([b - a for a, b in zip(before, after)])  # noqa: E731
    for key in ["turn_reward_mean", *turn_keys(ev[first]["policy"])]:
        if not all(key in ev[s]["policy"] and key in ev[s]["reference"] for s in seeds):
            continue  # a turn some seed's episodes never reached
        label = "RM reward per turn (mean)" if key == "turn_reward_mean" else f"RM reward, turn {key.rsplit('_', 1)[1]}"
        before, after = both(key)
        print(f"| {label} | {cell(before)} | {cell(after)} | {change(before, after)} |")
    before, after = both("mean_reward")
    print(f"| episode reward (sum of turns) | {cell(before)} | {cell(after)} | {change(before, after)} |")
    before, after = both("turns")
    reached = lambda turns: [100 * (t - 1) for t in turns]  # noqa: E731
    print(
        f"| episodes reaching the second human turn (%) | {cell(reached(before), '.0f')} | "
        f"{cell(reached(after), '.0f')} | |"
    )
    if all("cut_at_budget" in ev[s]["policy"] for s in seeds):
        before, after = both("cut_at_budget")
        print(
            f"| episodes a budget cut (reply still going at the token limit, %) | "
            f"{cell([100 * b for b in before], '.0f')} | {cell([100 * a for a in after], '.0f')} | |"
        )
    for key, label in (
        ("mean_length", "policy tokens per episode"),
        ("episode_length", "episode tokens (policy + human)"),
    ):
        before, after = both(key)
        print(f"| {label} | {cell(before, '.1f')} | {cell(after, '.1f')} | |")
    print(
        f"| win rate of PPO vs the starting model (%) | — | {cell([100 * ev[s]['win_rate'] for s in seeds], '.1f')} | |"
    )
    print(f"| KL(PPO ‖ starting model), nats per episode | 0 | {cell([ev[s]['kl'] for s in seeds], '.3f')} | |")
    print()
    print(
        seed_table(
            [
                SeedRow("RM reward per turn, before", both("turn_reward_mean")[0], "+.3f"),
                SeedRow("RM reward per turn, after", both("turn_reward_mean")[1], "+.3f"),
                SeedRow("win rate (%)", [100 * ev[s]["win_rate"] for s in seeds], ".1f"),
                SeedRow("second human turn reached, before (%)", reached(both("turns")[0]), ".0f"),
                SeedRow("second human turn reached, after (%)", reached(both("turns")[1]), ".0f"),
            ],
            seeds=seeds,
        )
    )
    print(f"\n{INTERVAL_NOTE}")
    config = run[first] / "rl" / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(config.read_text()) if config.is_file() else {}
    budget = cfg.get("env", {}).get("max_new_tokens", "env.max_new_tokens")
    print(
        f"\nA reply still going at {budget} tokens (the turn budget) truncates the episode, so the win rate and "
        "the episode reward (a sum over turns) also count turns reached; the reward per turn compares replies."
    )
    print("\n### Each turn, per seed: what shortens conversations\n")
    print(turns_by_seed(ev, seeds))
    print(
        "\nThe return PPO maximises is the sum of the turns' rewards; zero is the reward model's mean score of "
        "the best-ranked training replies (`rm.normalize`). While replies score below zero, a second turn lowers "
        "that sum, and a first reply that runs to the turn budget ends the episode before the second human turn: "
        "compare, seed by seed, how often the second turn is reached after PPO with the sign of the turn rewards."
    )
    metrics = {s: rows(run[s] / "rl" / "metrics.jsonl") for s in seeds}
    updates = min(len(m) for m in metrics.values())
    series = lambda key: [[m.get(key, float("nan")) for m in metrics[s]] for s in seeds]  # noqa: E731
    print(f"\n### PPO, per update (train conversations; mean over {len(seeds)} seed{plural})\n")
    print("| update | " + " | ".join(str(i + 1) for i in range(updates)) + " |")
    print("| --- " * (updates + 1) + "|")
    for key, label, fmt in (
        ("turn/reward_mean", "reward per turn", "+.2f"),
        ("objective/kl", "KL (nats)", ".2f"),
        ("kl/beta", "β", ".3f"),
    ):
        means = [sum(curve[i] for curve in series(key)) / len(seeds) for i in range(updates)]
        print(f"| {label} | " + " | ".join(f"{v:{fmt}}" for v in means) + " |")
    print("\n### Wall time (2-core CPU), minutes\n")
    episodes = rl[first]["episodes"] // max(rl[first]["updates"], 1)
    rm_wall = read_record(root / "rm")["wall_s"] / 60
    print(
        f"RM (once): {rm_wall:.1f} min, {rm['train_examples']} pairs, eval on {pairs} held-out pairs before and after.\n"
    )
    print("| run | what | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("| --- " * (len(seeds) + 2) + "|")
    walls = {s: read_record(run[s])["walls_s"] for s in seeds}
    what = (
        f"PPO: {rl[first]['updates']} updates × {episodes} two-turn episodes",
        f"eval: {ev[first]['prompts']} held-out conversations, PPO policy and starting model",
    )
    for i, (stage, text) in enumerate(zip(("rl", "eval"), what)):
        print(f"| {stage} | {text} | " + " | ".join(f"{walls[s][i] / 60:.1f}" for s in seeds) + " |")
    print(
        f"\n### Transcripts (held-out, seed {first}): starting model → after PPO, each reply's RM reward in brackets "
        "(the conversation that got furthest, and the largest gain)\n"
    )
    samples = rows(run[first] / "eval" / "eval_samples.jsonl")
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
    kl = cfg.get("algo", {}).get("kl", {})
    curves = plot_seed_curves(
        root / "curves.png",
        panels=[
            Panel("RM reward per turn (train rollouts)", {"PPO": series("turn/reward_mean")}),
            Panel(
                "KL to π_ref (nats per episode)",
                {"PPO": series("objective/kl")},
                target=kl.get("target") if kl.get("adaptive") else None,
            ),
            Panel("β (KL coefficient)", {"PPO": series("kl/beta")}),
        ],
        title="hh-rlhf dialogues: PPO with per-turn RM rewards",
    )
    print(f"\ncurves: {curves}")
    return [("curves", curves)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where the runs go (default: a temporary folder)")
    add_seed_arguments(parser)
    add_docs_argument(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    seeds = seeds_of(args)
    if args.write_docs:
        require_clean_tree()  # refuse now rather than after the runs
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="hh-dialogue-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    rm = ["experiment=hh_dialogue", "trainer.progress_bar=false", "stage=rm", *args.overrides]
    run_recorded(
        root / "rm", seed=0, commands=[[*rm, f"hydra.run.dir={root / 'rm'}", "seed=0"]], run_command=run_textrl
    )
    for seed in seeds:
        commands = commands_of(root, seed, args.overrides)
        run_recorded(seed_dir(root, seed), seed=seed, commands=commands, run_command=run_textrl)
    if not args.write_docs:
        report(root, seeds)
        return
    with record_output() as printed:
        pictures = report(root, seeds)
    write_page(
        "hh-dialogue",
        title="Multi-turn RLHF on hh-rlhf dialogues: RM → PPO with per-turn rewards on the CPU",
        tables=[printed.text],
        pictures=pictures,
        runs=[root / "rm", *(seed_dir(root, s) for s in seeds)],
        run_dir=root,
        notes="SmolLM2-135M-Instruct answers the first two human turns of hh-rlhf (harmless-base) "
        "conversations; the dialogue interaction replays the human turns. A reward model trained by "
        "`stage=rm` on chosen/rejected pairs of the *train* conversations scores each assistant reply "
        "in context (`env.turn_reward=model`), and PPO's GAE sees that score on the reply's last token. "
        "Evaluation uses *held-out* conversations (split by a hash of the first human turn; "
        "`hh_dialogues:heldout`), the same ones the RM's accuracy is measured on. One reward model "
        "(all-MiniLM-L6-v2 with a score head, `stage=rm`) serves every seed; each seed trains its own "
        "policy. A short run: the numbers show the pipeline working end to end, not a converged policy.",
    )


if __name__ == "__main__":
    main()
