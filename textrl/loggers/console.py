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


def summary_text(stage: str, summary: dict) -> str:
    """The closing console text of ``stage`` from its summary dict."""
    if stage == "rl":
        return "textrl: mean score {first_score:.3f} -> {last_score:.3f} in {wall_time_s:.0f}s".format(**summary)
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
        model = OmegaConf.select(cfg, MODEL_KEY.get(cfg.stage, "policy.model"))
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
