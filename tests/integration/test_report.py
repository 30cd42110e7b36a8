"""The figures (textrl.report), ``textrl report <run_dir>``, the eval median, and
``experiment=imdb_sentiment`` end to end with TinyStories-656K and VADER in place of the classifier."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from textrl.errors import TextRLError
from textrl.report import (
    draw_eval_report,
    draw_training_report,
    kl_target,
    redraw,
    save_figure,
    write_eval_report,
    write_rl_report,
    write_training_report,
)
from textrl.stages.evaluate import median

from conftest import one_line_error, read_jsonl, textrl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------


def test_median_averages_the_two_middle_values():
    assert median(torch.tensor([3.0, 1.0, 10.0, 2.0])) == 2.5  # torch.median would say 2.0
    assert median(torch.tensor([5.0, -1.0, 0.5])) == 0.5
    assert median(torch.tensor([7.0])) == 7.0


def test_kl_target_only_for_an_adaptive_controller():
    assert kl_target({"algo": {"kl": {"adaptive": True, "target": 6.0}}}) == 6.0
    assert kl_target({"algo": {"kl": {"adaptive": False, "target": 6.0}}}) is None
    assert kl_target({"algo": {"name": "grpo"}}) is None
    assert kl_target(None) is None


def test_a_broken_metrics_line_is_one_line_naming_the_run_dir(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"update": 1}\n{oops\n{"update": 3}\n')
    with pytest.raises(TextRLError, match="run_dir: .*metrics.jsonl' line 2 is not JSON"):
        redraw(str(tmp_path))


def test_rl_report_from_metrics_with_gaps_is_a_png_readable_under_the_umask(tmp_path):
    rows = [
        {"update": 1, "objective/score": 0.1, "objective/kl": 0.0, "kl/beta": 0.05, "loss/policy": 0.01},
        {"update": 2, "skipped/nonfinite": 1.0},  # a skipped update: no metrics
        {"update": 3, "objective/score": 0.4, "objective/kl": float("nan"), "perf/tokens_per_s": 100.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old = os.umask(0o022)
    try:
        path = Path(write_rl_report(str(tmp_path), {"algo": {"kl": {"adaptive": True, "target": 6.0}}}))
    finally:
        os.umask(old)
    assert path == tmp_path / "report.png" and is_png(path)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".tmp-*"))


def test_training_report_of_an_rm_run_plots_losses_and_accuracies(tmp_path, monkeypatch):
    rows = [
        {"update": 0, "eval/loss": 0.69, "eval/accuracy": 0.5},
        {"update": 5, "train/loss": 0.6, "train/accuracy": 0.6, "train/learning_rate": 1e-5},
        {"update": 10, "train/loss": 0.5, "train/accuracy": 0.7, "eval/loss": 0.55, "eval/accuracy": 0.65},
    ]
    fig = draw_training_report(rows)
    loss, right = fig.axes
    assert [line.get_label() for line in loss.lines] == ["train loss", "held-out loss"]
    assert list(loss.lines[1].get_xdata()) == [0, 10]
    assert right.get_title() == "accuracy" and len(right.lines) == 2
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps({"stage": "rm"}))  # a stage of experiment=instructgpt
    titles = []
    report_module = importlib.import_module("textrl.report")  # textrl.report is also a function's name
    draw = report_module.draw_training_report
    monkeypatch.setattr(report_module, "draw_training_report", lambda m, title: titles.append(title) or draw(m, title))
    assert redraw(str(tmp_path)) == [str(tmp_path / "report.png")] and is_png(tmp_path / "report.png")
    assert titles and titles[0].startswith("stage=rm,") and titles[0].endswith(": 10 optimizer steps")


def test_training_report_without_a_train_loss_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"update": 0, "eval/loss": 1.0}) + "\n")
    with pytest.raises(TextRLError, match="has no train/loss"):
        write_training_report(str(tmp_path), "sft")


def test_eval_histogram_legend_gives_each_mean_and_median(tmp_path):
    rows = [{"reference_reward": b, "policy_reward": a} for b, a in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (9.0, 10.0))]
    fig = draw_eval_report(rows)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["before (reference): mean 3.00, median 1.50", "after (policy): mean 4.00, median 2.50"]
    path = save_figure(fig, str(tmp_path / "h.png"))
    assert is_png(Path(path))


def test_eval_report_without_finite_rewards_is_an_error(tmp_path):
    (tmp_path / "eval_rewards.jsonl").write_text('{"reference_reward": 1.0}\n')
    with pytest.raises(TextRLError, match="no finite rewards"):
        write_eval_report(str(tmp_path))


@pytest.mark.parametrize("make", ["missing", "empty_dir", "a_file", "empty_metrics"])
def test_redraw_refuses_a_folder_that_is_not_a_run(tmp_path, make):
    target = tmp_path / "x"
    if make == "empty_dir":
        target.mkdir()
    elif make == "a_file":
        target.write_text("hello")
    elif make == "empty_metrics":
        target.mkdir()
        (target / "metrics.jsonl").write_text("")
    with pytest.raises(TextRLError) as e:
        redraw(str(target))
    assert str(e.value).startswith("run_dir: ") and "expected" in str(e.value)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def test_textrl_report_on_a_folder_that_is_not_a_run_is_one_line(tmp_path, cli):
    result = cli("report", str(tmp_path))
    line = one_line_error(result)
    assert line == (
        f"textrl: error: run_dir: got {str(tmp_path)!r}; expected a textrl run directory holding "
        f"metrics.jsonl (stage=rl, sft or rm) or eval_rewards.jsonl (stage=eval)"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    line = one_line_error(cli("report"))
    assert line.startswith("textrl: error: report: got []; expected exactly one run directory")


def imdb_tiny(run_dir, *extra):
    """experiment=imdb_sentiment at CI size: TinyStories-656K, VADER instead of the classifier."""
    return [
        "experiment=imdb_sentiment",
        "policy=tinystories",
        "reward.backend=vader",
        f"hydra.run.dir={run_dir}",
        "trainer.progress_bar=false",
        "rollout.batch_size=4",
        "algo.minibatch_size=4",
        "env.max_new_tokens=8",
        "data.max_prompts=300",
        *extra,
    ]


def test_imdb_sentiment_rl_eval_and_redrawn_reports(assets, tmp_path, cli):
    from transformers import AutoTokenizer

    rl = tmp_path / "rl"
    result = textrl(*imdb_tiny(rl, "trainer.updates=2", "logger=wandb"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["update"] for r in read_jsonl(str(rl / "metrics.jsonl"))] == [1, 2]
    assert is_png(rl / "report.png")
    # the figure reached the offline wandb run as an image
    assert list((rl / "wandb").glob("offline-run-*/files/media/images/report_*.png"))
    # prompts are IMDB train reviews cut to 2..8 TinyStories tokens
    tok = AutoTokenizer.from_pretrained(assets / "tinystories-656k")
    prompts = [s["prompt"] for s in read_jsonl(str(rl / "samples.jsonl"))]
    assert prompts and all(1 <= len(tok(p, add_special_tokens=False)["input_ids"]) <= 9 for p in prompts)

    # textrl report redraws it from a copy of the run directory
    copy = tmp_path / "copied"
    shutil.copytree(rl, copy, ignore=shutil.ignore_patterns("wandb", "policy", "checkpoints"))
    (copy / "report.png").unlink()
    result = cli("report", str(copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(copy / "report.png")] and is_png(copy / "report.png")

    # stage=eval on held-out IMDB test reviews: mean and median of both, rewards of every prompt, histograms
    ev = tmp_path / "eval"
    result = textrl(
        *imdb_tiny(
            ev,
            "stage=eval",
            f"policy.model={rl / 'policy'}",
            f"eval.reference={assets / 'tinystories-656k'}",
            "eval.num_prompts=12",
            "logger=wandb",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((ev / "eval.json").read_text())
    rows = read_jsonl(str(ev / "eval_rewards.jsonl"))
    assert report["prompts"] == len(rows) == 12
    for block, key in (("policy", "policy_reward"), ("reference", "reference_reward")):
        rewards = sorted(r[key] for r in rows)
        assert math.isclose(report[block]["median_reward"], (rewards[5] + rewards[6]) / 2, abs_tol=1e-6)
        assert math.isclose(report[block]["mean_reward"], sum(rewards) / 12, abs_tol=1e-5)
    # logger=wandb prints no table; the same numbers reach metrics.jsonl (and wandb) through the hooks
    [record] = read_jsonl(str(ev / "metrics.jsonl"))
    assert record["eval/policy/median_reward"] == report["policy"]["median_reward"]
    assert record["eval/reference/median_reward"] == report["reference"]["median_reward"]
    assert is_png(ev / "eval_report.png")
    assert list((ev / "wandb").glob("offline-run-*/files/media/images/eval/reward_histogram_*.png"))
    # held-out prompts: a seeded draw of 12 IMDB test reviews, each cut to 2..8 tokens
    from textrl.prompts import load_prompts

    expected = load_prompts(
        str(assets / "imdb" / "test_5k.jsonl.gz"),
        text_field="text",
        sample=12,
        seed=0,
        prefix_tokens=[2, 8],
        tokenizer=tok,
    )
    assert [r["prompt"] for r in rows] == expected
    (ev / "eval_report.png").unlink()
    result = cli("report", str(ev))
    assert result.returncode == 0 and result.stdout.split() == [str(ev / "eval_report.png")]
    assert is_png(ev / "eval_report.png")


def test_imdb_sentiment_without_a_classifier_says_how_to_train_one(assets, tmp_path, cli):
    result = cli(
        "experiment=imdb_sentiment",
        "policy=tinystories",
        "data.max_prompts=20",
        "trainer.updates=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    line = one_line_error(result)
    assert line.startswith("textrl: error: reward.model: got an empty value;")
    assert "textrl experiment=imdb_classifier" in line and "reward.model=" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_eval_table_shows_mean_and_median_of_both():
    from textrl.loggers.console import format_table

    result = {
        "prompts": 3,
        "win_rate": 0.5,
        "kl": 1.25,
        "policy": {"mean_reward": 1.0, "median_reward": 2.0, "mean_length": 4.0},
        "reference": {"mean_reward": 0.25, "median_reward": -0.5, "mean_length": 5.0},
    }
    table = format_table(result)
    assert "| median reward | 2.000 | -0.500 |" in table and "| mean reward | 1.000 | 0.250 |" in table
