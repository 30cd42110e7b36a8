"""Every stage reports through the lifecycle hooks: metrics.jsonl, the console and wandb (one run
per stage, the instructgpt stages in one group); files are strict JSON."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from textrl.io import append_jsonl, atomic_write_json, strict_json
from textrl.loggers import JsonlLogger, stage_loggers
from textrl.loggers.console import ConsoleLogger
from textrl.stages.evaluate import eval_metrics
from textrl.stages.reward_model import fit
from textrl.stages.sft import trainer_metrics

from conftest import compose_config, read_jsonl


# -- strict JSON ----------------------------------------------------------------------------
def test_json_writes_turn_non_finite_numbers_into_null(tmp_path):
    record = {
        "a": float("nan"),
        "b": [float("inf"), 1.5],
        "c": {"d": -float("inf")},
        "e": np.float32(0.25),
        "f": torch.tensor(2.0),
        "g": "nan",
        "h": 3,
        "i": True,
        "j": None,
    }
    append_jsonl(tmp_path / "m.jsonl", record)
    atomic_write_json(str(tmp_path / "s.json"), record)
    expected = {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
        "e": 0.25,
        "f": 2.0,
        "g": "nan",
        "h": 3,
        "i": True,
        "j": None,
    }
    assert read_jsonl(tmp_path / "m.jsonl") == [expected]
    assert json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == expected


def test_fresh_jsonl_logger_drops_an_earlier_runs_records_and_rl_keeps_them(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"update": 1, "old": 1}\n')
    JsonlLogger(str(tmp_path)).textrl_on_metrics(2, {"x": 1.0}, [])
    assert [r["update"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    cfg = compose_config(["stage=sft", "logger=none"])
    [logger] = stage_loggers(cfg, str(tmp_path))
    logger.textrl_on_metrics(0, {"eval/loss": 2.0}, [])
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"update": 0, "eval/loss": 2.0}]
    assert len(stage_loggers(compose_config(["stage=rl", "logger=console"]), str(tmp_path))) == 2
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 1  # rl resumes: its files are cut by resume()


# -- metric names ---------------------------------------------------------------------------
def test_trainer_logs_become_train_and_eval_metrics():
    logs = {
        "loss": 2.5,
        "grad_norm": 1.25,
        "learning_rate": 1e-3,
        "epoch": 0.5,
        "total_flos": 7,
        "eval_loss": 3.0,
        "eval_runtime": 0.1,
        "note": "text",
        "flag": True,
    }
    assert trainer_metrics(logs) == {
        "train/loss": 2.5,
        "train/grad_norm": 1.25,
        "train/learning_rate": 1e-3,
        "train/epoch": 0.5,
        "eval/loss": 3.0,
        "eval/runtime": 0.1,
    }


def test_eval_result_flattens_to_eval_metrics():
    result = {
        "prompts": 4,
        "policy": {"mean_reward": 0.5, "mean_length": 3.0},
        "reference": {"mean_reward": 0.25},
        "win_rate": 0.75,
        "policy_model": "dir",
        "histogram": [1, 2],
    }
    assert eval_metrics(result) == {
        "eval/prompts": 4.0,
        "eval/policy/mean_reward": 0.5,
        "eval/policy/mean_length": 3.0,
        "eval/reference/mean_reward": 0.25,
        "eval/win_rate": 0.75,
    }


def test_rm_fit_reports_the_mean_since_the_last_report():
    """50 steps of batch 1 report every 50 // 20 = 2 steps: losses 1..50 give means 1.5, 3.5, ..."""
    model = torch.nn.Linear(1, 1)
    calls, logged = [], []

    def step(batch):
        calls.append(len(calls) + 1)
        return model.weight.sum() * 0 + float(calls[-1]), torch.tensor(float(calls[-1] % 2))

    r = SimpleNamespace(batch_size=1, epochs=1, lr=1e-3, warmup_ratio=0.0)
    steps = fit(model, list(range(50)), r, 0, step, lambda i, m: logged.append((i, m)))
    assert steps == 50 and [i for i, _ in logged] == list(range(2, 51, 2))
    assert logged[0][1]["train/loss"] == pytest.approx(1.5) and logged[1][1]["train/loss"] == pytest.approx(3.5)
    assert all(m["train/accuracy"] == pytest.approx(0.5) for _, m in logged)  # one odd, one even step each
    assert logged[0][1]["train/epoch"] == pytest.approx(2 / 50) and logged[-1][1]["train/epoch"] == pytest.approx(1)
    assert logged[0][1]["train/learning_rate"] > logged[-1][1]["train/learning_rate"] == pytest.approx(0.0)


# -- console ------------------------------------------------------------------------------
def test_console_prints_each_stages_records_and_summary(capsys):
    console = ConsoleLogger()
    console.textrl_on_stage_start(compose_config(["stage=rm", "rm.model=some/rm", "logger=console"]), "runs/rm")
    console.textrl_on_metrics(0, {"eval/loss": 0.69, "eval/pairwise_accuracy": 0.5})
    console.textrl_on_metrics(4, {"train/loss": 0.5, "train/accuracy": 0.75, "train/learning_rate": 1e-4})
    console.textrl_on_stage_end({"stage": "rm", "train_examples": 40, "eval_before": {"loss": 0.69}})
    console.textrl_on_stage_start(compose_config(["stage=eval", "logger=console"]), "runs/eval")
    console.textrl_on_metrics(0, {"eval/win_rate": 0.75})  # the table says it once, at the end
    console.textrl_on_stage_end(
        {
            "prompts": 4,
            "win_rate": 0.75,
            "kl": 0.5,
            "policy": {"mean_reward": 1.0, "median_reward": 1.0, "mean_length": 3.0},
            "reference": {"mean_reward": 0.5, "median_reward": 0.5, "mean_length": 2.0},
        }
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "textrl: stage=rm model=some/rm run_dir=runs/rm",
        "rm step    0 | eval_loss 0.69 | eval_pairwise_accuracy 0.5",
        "rm step    4 | loss 0.5 | accuracy 0.75 | learning_rate 0.0001",
        "textrl rm: stage=rm, train_examples=40",
    ]
    assert lines[4].startswith("textrl: stage=eval model=") and "win rate vs reference | 0.750" in lines[-2]
    assert len(lines) == 12  # start, then the 7-line table (mean and median rows): no separate eval record line


def test_rl_closing_block_says_what_was_not_written(capsys):
    console = ConsoleLogger()
    console.textrl_on_stage_start(compose_config(["logger=console"]), "runs/rl")
    summary = {"updates": 16, "episodes": 256, "wall_time_s": 187.4, "run_dir": "runs/rl", "kl_target": None}
    summary.update(first_score_mean3=0.25, last_score_mean3=0.61, kl_last_mean3=5.432, report_png=None, policy_dir=None)
    console.textrl_on_stage_end(summary)
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines == [
        "textrl: done: 16 updates × 16 episodes in 3 min 07 s",
        "  score   0.250 → 0.610   (mean over the first 3 updates → the last 3)",
        "  KL      5.43 nats per episode to the reference over the last 3 updates",
        "  report  not written (redraw it with: textrl report runs/rl)",
        "  policy  not saved (trainer.save_policy=false)",
    ]


# -- the pipeline: metrics.jsonl and one wandb run per stage, grouped -------------------------
class FakeRun:
    """What WandbLogger uses of a ``wandb.init`` run, recording the calls."""

    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.summary, self.finished = kwargs, [], {}, False

    def log(self, record, step=None):
        self.logged.append((step, record))

    def finish(self):
        self.finished = True


def test_instructgpt_stages_each_log_to_their_folder_and_one_wandb_group(assets, tmp_path, monkeypatch):
    import wandb

    from textrl.plugins import load_plugins
    from textrl.run import run

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1])
    registry = load_plugins(autoload=False)
    cfg = compose_config(
        [
            "experiment=instructgpt_tiny",
            "logger=wandb",
            "logger.run_name=demo",
            "trainer.progress_bar=false",
            "sft.max_examples=48",
            "rm.max_examples=32",
            "rm.max_eval_examples=8",
            "trainer.updates=2",
            "rollout.batch_size=4",
            "algo.minibatch_size=4",
            "env.max_new_tokens=4",
            "eval.num_prompts=4",
        ],
        registry,
    )
    run(cfg, run_dir=str(tmp_path), registry=registry)

    stages = ["sft", "rm", "rl", "eval"]
    assert [r.kwargs["job_type"] for r in runs] == stages
    assert [r.kwargs["dir"] for r in runs] == [str(tmp_path / s) for s in stages]
    assert [r.kwargs["name"] for r in runs] == [f"demo-{s}" for s in stages]
    groups = {r.kwargs["group"] for r in runs}
    assert len(groups) == 1 and groups.pop().startswith("instructgpt-")
    assert all(r.kwargs["mode"] == "offline" and r.finished and r.summary for r in runs)
    expected = {
        "sft": {"train/loss", "train/learning_rate", "train/epoch", "eval/loss"},
        "rm": {"train/loss", "train/accuracy", "train/learning_rate", "eval/pairwise_accuracy"},
        "rl": {"objective/score", "objective/kl", "loss/policy"},
        "eval": {"eval/win_rate", "eval/kl", "eval/policy/mean_reward", "eval/reference/mean_reward"},
    }
    for stage, fake in zip(stages, runs):
        records = read_jsonl(tmp_path / stage / "metrics.jsonl")
        keys = set().union(*records)
        assert expected[stage] <= keys, (stage, keys)
        # wandb got the same records at the same steps (the samples table aside)
        assert [(r["update"], {k: v for k, v in r.items() if k != "update"}) for r in records] == [
            (step, strict_json({k: v for k, v in logged.items() if k != "samples"}))
            for step, logged in fake.logged
            if set(logged) not in ({"samples"}, {"report"}, {"eval/reward_histogram"})
        ]  # tables and figures
        assert all(
            isinstance(v, (int, float)) and math.isfinite(v) for r in records for v in r.values() if v is not None
        )
    sft = read_jsonl(tmp_path / "sft" / "metrics.jsonl")
    assert sft[0]["update"] == 0 and "eval/loss" in sft[0]  # held-out loss before training
    assert sft[-1]["update"] == max(r["update"] for r in sft) and "eval/loss" in sft[-1]  # ... and after
    assert [r["update"] for r in read_jsonl(tmp_path / "rl" / "metrics.jsonl")] == [1, 2]
    assert runs[3].summary["win_rate"] == json.loads((tmp_path / "eval" / "eval.json").read_text())["win_rate"]
    assert not (tmp_path / "metrics.jsonl").exists()  # the pipeline itself is no stage
