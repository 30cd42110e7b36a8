"""One console line per metrics record with its headline numbers (printed above the progress
bar), and a closing summary per stage."""

from __future__ import annotations

from omegaconf import OmegaConf
from tqdm import tqdm

from textrl.hookspecs import hookimpl

HEADLINE = (
    "objective/score",
    "objective/rlhf_reward",
    "objective/kl",
    "kl/beta",
    "loss/policy",
    "loss/value",
    "perf/tokens_per_s",  # rl
    "train/loss",
    "train/accuracy",
    "train/learning_rate",
    "eval/loss",
    "eval/accuracy",
    "eval/pairwise_accuracy",
)  # sft, rm (eval prints its table at the end instead)
"""The metrics (names in :data:`textrl.metrics.METRICS`) a console line shows when present."""
MODEL_KEY = {"rm": "rm.model"}  # the model a stage starts from; policy.model for the others


def format_table(result: dict) -> str:
    """The eval result (``eval.json``'s dict: ``policy``/``reference`` means, medians and lengths,
    ``win_rate``, ``kl`` in nats) as a small Markdown table."""
    p, r = result["policy"], result["reference"]
    return "\n".join(
        [
            f"| {result['prompts']} held-out prompts | policy | reference |",
            "| --- | --- | --- |",
            f"| mean reward | {p['mean_reward']:.3f} | {r['mean_reward']:.3f} |",
            f"| median reward | {p['median_reward']:.3f} | {r['median_reward']:.3f} |",
            f"| mean length (tokens) | {p['mean_length']:.1f} | {r['mean_length']:.1f} |",
            *(f"| {label} | {p[key]:{fmt}} | {r[key]:{fmt}} |" for key, label, fmt in EPISODE_ROWS if key in p),
            f"| win rate vs reference | {result['win_rate']:.3f} | — |",
            f"| KL(policy ‖ reference), nats | {result['kl']:.3f} | 0 |",
        ]
    )


EPISODE_ROWS = (
    ("accuracy", "accuracy (exact match)", ".3f"),
    ("turns", "policy turns per episode", ".2f"),
    ("episode_length", "episode length (tokens)", ".1f"),
    ("tool_call_rate", "tool-call rate", ".3f"),
    ("tool_calls", "tool calls per episode", ".2f"),
    ("turn_reward_mean", "reward per turn", ".3f"),
)
"""Rows of the eval table shown when ``eval.json``'s blocks have them (key, label, format)."""


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def duration(seconds: float) -> str:
    """``seconds`` as ``"42 s"`` or ``"3 min 07 s"``."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def rl_summary_block(summary: dict) -> str:
    """The closing block of an RL run (:func:`textrl.stages.rl.finish`'s summary): updates,
    episodes and wall time; the mean score of the first k updates → the last k; the KL to π_ref
    over the last k updates (nats per episode, with the adaptive controller's target); where
    ``report.png`` and the policy are (or that they were not written)."""
    k = max(1, min(3, summary["updates"] // 3))
    over = "the first update → the last" if k == 1 else f"the first {k} updates → the last {k}"
    target = f" (target {summary['kl_target']:g})" if summary.get("kl_target") is not None else ""
    report, policy = summary.get("report_png"), summary.get("policy_dir")
    return "\n".join(
        [
            f"textrl: done: {summary['updates']} update{'s' if summary['updates'] != 1 else ''} × "
            f"{summary['episodes'] // max(1, summary['updates'])} episodes in {duration(summary['wall_time_s'])}",
            f"  score   {_number(summary.get('first_score_mean3'), '.3f')} → "
            f"{_number(summary.get('last_score_mean3'), '.3f')}   (mean over {over})",
            f"  KL      {_number(summary.get('kl_last_mean3'), '.2f')} nats per episode to the reference over the "
            f"last {'update' if k == 1 else f'{k} updates'}{target}",
            f"  report  {report if report else 'not written (redraw it with: textrl report ' + summary['run_dir'] + ')'}",
            f"  policy  {policy if policy else 'not saved (trainer.save_policy=false)'}",
        ]
    )


def summary_text(stage: str, summary: dict) -> str:
    """The closing console text of ``stage`` from its summary dict (rl: :func:`rl_summary_block`)."""
    if stage == "rl":
        return rl_summary_block(summary)
    if stage == "sft":
        return (
            f"textrl sft: eval loss {summary['eval_loss_before']:.3f} -> {summary['eval_loss_after']:.3f} "
            f"over {summary['steps']} steps; model in {summary['model_dir']}"
        )
    if stage == "eval":
        return format_table(summary)
    return f"textrl {stage}: " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list)))


class ConsoleLogger:
    """Prints ``update N | score ... | kl ...`` (rl) or ``sft step N | loss ... | learning_rate ...``
    lines and the stage's closing summary (:func:`summary_text`)."""

    stage = "rl"

    @hookimpl
    def textrl_on_stage_start(self, cfg, run_dir):
        """Print the stage, its model and its run directory."""
        self.stage = cfg.stage
        key = MODEL_KEY.get(cfg.stage, "policy.model")
        model = OmegaConf.select(cfg, key)
        if model is None and key == "policy.model":  # a policy plugin without a model path
            model = f"policy={OmegaConf.select(cfg, 'policy.name')}"
        tqdm.write(f"textrl: stage={cfg.stage} model={model} run_dir={run_dir}")

    @hookimpl
    def textrl_on_metrics(self, update, metrics):
        """Print one line of the update's headline metrics."""
        parts = [
            f"{'eval_' if k.startswith('eval/') else ''}{k.split('/')[-1]} {metrics[k]:.4g}"
            for k in HEADLINE
            if metrics.get(k) is not None
        ]
        if parts:
            label = "update" if self.stage == "rl" else f"{self.stage} step"
            tqdm.write(f"{label} {update:>4} | " + " | ".join(parts))

    @hookimpl
    def textrl_on_stage_end(self, summary):
        """Print the stage's summary block."""
        tqdm.write(summary_text(self.stage, summary))
