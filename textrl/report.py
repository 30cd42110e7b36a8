"""Pictures of a run, drawn from the files it wrote (matplotlib, Agg backend: no display needed).

- An RL run (``metrics.jsonl``) gets ``report.png``: four panels against the update number,
  (1) the reward model's mean score ``objective/score`` and the KL-penalised RLHF reward
  ``objective/rlhf_reward``; (2) the KL to the reference ``objective/kl`` (nats per episode) with
  its target (``algo.kl.target`` of an adaptive controller) and β ``kl/beta`` on a second axis;
  (3) ``loss/policy`` and ``loss/value``; (4) ``policy/clipfrac`` and ``perf/tokens_per_s`` on a
  second axis. Missing metrics (REINFORCE has no value loss) leave their line out.
- An SFT or RM run (``metrics.jsonl`` with ``train/loss``) gets ``report.png`` too: two panels
  against the optimizer step, (1) the train loss and the held-out ``eval/loss`` (nats per token
  for SFT, pairwise/cross-entropy loss for the RM); (2) ``train/accuracy`` and
  ``eval/accuracy`` / ``eval/pairwise_accuracy`` when the stage reports them (the RM), else the
  learning rate.
- An eval run (``eval_rewards.jsonl``, one row per held-out prompt) gets ``eval_report.png``: the
  reward histograms of the reference (before RL) and the policy (after), means and medians
  marked, as in TRL's gpt2-sentiment notebook.

``textrl report <run_dir>`` redraws whichever of these the folder's files allow, so a killed or
resumed run can be plotted; every stage calls the same functions at its end.
"""

from __future__ import annotations

import logging
import math
import os

from textrl.errors import TextRLError
from textrl.io import read_jsonl, write_file_atomically

log = logging.getLogger(__name__)

RL_FIGURE = "report.png"
EVAL_FIGURE = "eval_report.png"
EVAL_REWARDS = "eval_rewards.jsonl"


def kl_target(config: dict | None) -> float | None:
    """The KL target (nats per episode) of an adaptive KL controller in a plain config dict
    (``algo.kl.target`` when ``algo.kl.adaptive``), else ``None``."""
    kl = ((config or {}).get("algo") or {}).get("kl") or {}
    target = kl.get("target") if isinstance(kl, dict) and kl.get("adaptive", True) else None
    return float(target) if isinstance(target, (int, float)) and not isinstance(target, bool) else None


def saved_config(run_dir: str) -> dict | None:
    """The composed config Hydra saved in ``<run_dir>/.hydra/config.yaml`` (``None`` when absent or
    unreadable: the figure then goes without the KL target)."""
    import yaml

    path = os.path.join(run_dir, ".hydra", "config.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def saved_summary(run_dir: str) -> dict | None:
    """The ``summary.json`` a stage wrote in ``run_dir`` (``None`` when absent or unreadable)."""
    import json

    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    """``(updates, values)`` of one metric over the records that hold a finite number for it."""
    xs, ys = [], []
    for row in metrics:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(row.get("update", len(xs) + 1))
            ys.append(float(value))
    return xs, ys


def _plot(ax, metrics: list[dict], key: str, label: str, **style) -> bool:
    xs, ys = _series(metrics, key)
    if xs:
        ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None, **style)
    return bool(xs)


def _legend(*axes) -> None:
    handles, labels = [], []
    for ax in axes:
        found, names = ax.get_legend_handles_labels()
        handles += found
        labels += names
    if handles:
        axes[0].legend(handles, labels, fontsize=8, loc="best")


def draw_rl_report(metrics: list[dict], target: float | None = None, title: str = ""):
    """The four-panel RL figure (see the module docstring).

    Args:
        metrics: ``metrics.jsonl`` records, each with ``update`` (1-based int) and float metrics;
            score/reward in the reward model's units, KL in nats per episode, tokens/s in tokens
            per second of wall time.
        target: the KL target in nats per episode (a dashed line), or ``None``.
        title: the figure's title (e.g. the run directory).

    Returns:
        matplotlib.figure.Figure: the figure (not shown; save it with :func:`save_figure`).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2, sharex=True)
    _plot(a, metrics, "objective/score", "score (reward model)", color="C0")
    _plot(a, metrics, "objective/rlhf_reward", "RLHF reward (score − β·KL)", color="C1")
    a.set_title("reward")
    a.set_ylabel("mean per episode")
    _plot(b, metrics, "objective/kl", "KL(π ‖ π_ref)", color="C3")
    if target is not None:
        b.axhline(target, color="C3", linestyle="--", linewidth=1, label=f"KL target {target:g}")
    b.set_ylabel("nats per episode")
    b.set_title("KL to the reference and β")
    beta = b.twinx()
    _plot(beta, metrics, "kl/beta", "β (KL coefficient)", color="C2")
    beta.set_ylabel("β")
    _legend(b, beta)
    _plot(c, metrics, "loss/policy", "policy loss", color="C0")
    _plot(c, metrics, "loss/value", "value loss", color="C4")
    c.set_title("losses")
    c.set_xlabel("update")
    _plot(d, metrics, "policy/clipfrac", "clip fraction", color="C5")
    d.set_ylabel("fraction of tokens clipped")
    d.set_title("clipping and throughput")
    d.set_xlabel("update")
    speed = d.twinx()
    _plot(speed, metrics, "perf/tokens_per_s", "tokens/s", color="C7")
    speed.set_ylabel("tokens per second")
    _legend(d, speed)
    for ax in (a, c):
        _legend(ax)
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for ax in (a, b, c, d, beta, speed):
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))  # β = 0.05 reads as 0.05, not 1e-6 + ...
    for ax in (a, b, c, d):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or f"{len(metrics)} updates")
    return fig


def draw_training_report(metrics: list[dict], title: str = ""):
    """The two-panel SFT/RM figure (see the module docstring).

    Args:
        metrics: ``metrics.jsonl`` records of an SFT or RM run, each with ``update`` (the optimizer
            step, int) and float ``train/*`` / ``eval/*`` metrics (losses in nats, accuracies in [0, 1]).
        title: the figure's title.

    Returns:
        matplotlib.figure.Figure: the figure (not shown; save it with :func:`save_figure`).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss, right = fig.subplots(1, 2)
    _plot(loss, metrics, "train/loss", "train loss", color="C0")
    _plot(loss, metrics, "eval/loss", "held-out loss", color="C1")
    loss.set_title("loss")
    loss.set_ylabel("nats")
    accuracy = _plot(right, metrics, "train/accuracy", "train accuracy", color="C0")
    accuracy |= _plot(right, metrics, "eval/accuracy", "held-out accuracy", color="C1")
    accuracy |= _plot(right, metrics, "eval/pairwise_accuracy", "held-out pairwise accuracy", color="C1")
    if accuracy:
        right.set_title("accuracy")
        right.set_ylabel("fraction")
    else:
        _plot(right, metrics, "train/learning_rate", "learning rate", color="C2")
        right.set_title("learning rate")
    for ax in (loss, right):
        _legend(ax)
        ax.grid(alpha=0.3)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or f"{len(metrics)} records")
    return fig


def draw_eval_report(rows: list[dict], title: str = ""):
    """Before/after reward histograms from ``eval_rewards.jsonl`` rows.

    Args:
        rows: one dict per held-out prompt with float ``reference_reward`` (before RL) and
            ``policy_reward`` (after), in the reward model's units.
        title: the figure's title.

    Returns:
        matplotlib.figure.Figure: one panel, both histograms on shared bins, the mean (solid)
        and median (dashed) of each marked and given in the legend.

    Raises:
        TextRLError: no rows, or rows without finite rewards.
    """
    import numpy as np
    from matplotlib.figure import Figure

    before = np.array([r.get("reference_reward", math.nan) for r in rows], dtype=float)
    after = np.array([r.get("policy_reward", math.nan) for r in rows], dtype=float)
    before, after = before[np.isfinite(before)], after[np.isfinite(after)]
    if not len(before) or not len(after):
        raise TextRLError(
            f"run_dir: {EVAL_REWARDS} holds no finite rewards; expected one row per held-out prompt "
            f"with reference_reward and policy_reward"
        )
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    bins = np.histogram_bin_edges(np.concatenate([before, after]), bins=min(40, max(10, len(before) // 8)))
    for values, name, color in ((before, "before (reference)", "C0"), (after, "after (policy)", "C1")):
        mean, median = float(values.mean()), float(np.median(values))
        ax.hist(values, bins=bins, alpha=0.5, color=color, label=f"{name}: mean {mean:.2f}, median {median:.2f}")
        ax.axvline(mean, color=color, linewidth=2)
        ax.axvline(median, color=color, linewidth=2, linestyle="--")
    ax.set_xlabel("reward (reward model score)")
    ax.set_ylabel("held-out prompts")
    ax.legend(fontsize=9, title="solid: mean, dashed: median", title_fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{len(before)} held-out prompts")
    return fig


def save_figure(fig, path: str) -> str:
    """Write ``fig`` as a PNG to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``), readable as the user's umask allows. Returns ``path``.

    Raises:
        WriteError: the file cannot be written (full disk, permission); ``path`` is unchanged.
    """
    write_file_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100), suffix=".png")
    return path


def write_rl_report(run_dir: str, config: dict | None = None) -> str:
    """Draw ``<run_dir>/report.png`` from ``<run_dir>/metrics.jsonl``; returns its path.

    Args:
        run_dir: the RL run directory.
        config: the run's config as a plain dict, for the KL target; ``None`` reads
            ``.hydra/config.yaml`` when there is one.

    Raises:
        TextRLError: no ``metrics.jsonl`` or no records in it.
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    metrics = read_jsonl(path, key="run_dir") if os.path.isfile(path) else []
    if not metrics:
        raise TextRLError(
            f"run_dir: {run_dir!r} has no update in metrics.jsonl; expected an RL run with at least one finished update"
        )
    target = kl_target(config if config is not None else saved_config(run_dir))
    fig = draw_rl_report(metrics, target, title=f"{os.path.basename(os.path.abspath(run_dir))}: {len(metrics)} updates")
    return save_figure(fig, os.path.join(run_dir, RL_FIGURE))


def write_training_report(run_dir: str, stage: str) -> str:
    """Draw ``<run_dir>/report.png`` of an SFT or RM run from its ``metrics.jsonl``; returns its path.

    Args:
        run_dir: the stage's run directory.
        stage: ``"sft"`` or ``"rm"``, for the title.

    Raises:
        TextRLError: no ``metrics.jsonl`` or no ``train/loss`` record in it.
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    metrics = read_jsonl(path, key="run_dir") if os.path.isfile(path) else []
    if not any("train/loss" in r for r in metrics):
        raise TextRLError(
            f"run_dir: {run_dir!r} has no train/loss in metrics.jsonl; expected an SFT or RM run that logged a step"
        )
    steps = max(int(r.get("update", 0)) for r in metrics)
    fig = draw_training_report(
        metrics, title=f"stage={stage}, {os.path.basename(os.path.abspath(run_dir))}: {steps} optimizer steps"
    )
    return save_figure(fig, os.path.join(run_dir, RL_FIGURE))


def write_training_report_quietly(run_dir: str, stage: str) -> str | None:
    """:func:`write_training_report` at the end of an SFT or RM run: a figure that cannot be drawn
    is a warning, never a failed run. Returns the path, or ``None`` when it failed."""
    try:
        return write_training_report(run_dir, stage)
    except Exception as e:  # matplotlib, the file system, no logged step...
        log.warning("report.png not written (%s: %s); redraw it with `textrl report %s`", type(e).__name__, e, run_dir)
        return None


def write_eval_report(run_dir: str) -> str:
    """Draw ``<run_dir>/eval_report.png`` from ``<run_dir>/eval_rewards.jsonl``; returns its path.

    Raises:
        TextRLError: no rewards file or no finite rewards in it.
    """
    path = os.path.join(run_dir, EVAL_REWARDS)
    if not os.path.isfile(path):
        raise TextRLError(f"run_dir: {run_dir!r} has no {EVAL_REWARDS}; expected a stage=eval run directory")
    rows = read_jsonl(path, key="run_dir")
    return save_figure(
        draw_eval_report(rows, title=f"{len(rows)} held-out prompts: reward before and after RL"),
        os.path.join(run_dir, EVAL_FIGURE),
    )


def write_rl_report_quietly(run_dir: str, cfg) -> str | None:
    """:func:`write_rl_report` at the end of an RL run: a figure that cannot be drawn is a warning
    (naming ``textrl report`` to retry), never a failed run; everything else is already written.
    ``cfg`` is the run's OmegaConf config. Returns the path, or ``None`` when it failed."""
    from omegaconf import OmegaConf

    try:
        return write_rl_report(run_dir, OmegaConf.to_container(cfg, resolve=True))
    except Exception as e:  # matplotlib, the file system, a metric of an unexpected type...
        log.warning("report.png not written (%s: %s); redraw it with `textrl report %s`", type(e).__name__, e, run_dir)
        return None


def redraw(run_dir: str) -> list[str]:
    """``textrl report <run_dir>``: redraw ``report.png`` (from an RL, SFT or RM run's
    ``metrics.jsonl``) and/or ``eval_report.png`` (from ``eval_rewards.jsonl``); returns the paths written.

    Raises:
        TextRLError: ``run_dir`` is not a directory, or holds neither file.
    """
    if not os.path.isdir(run_dir):
        raise TextRLError(
            f"run_dir: got {run_dir!r}; expected a textrl run directory (it does not exist or is not a directory)"
        )
    metrics = os.path.join(run_dir, "metrics.jsonl")
    # every stage writes metrics.jsonl; an RL run's records carry objective/score
    records = read_jsonl(metrics, key="run_dir") if os.path.isfile(metrics) else []
    has_rl = any("objective/score" in r for r in records)
    has_training = not has_rl and any("train/loss" in r for r in records)
    has_eval = os.path.isfile(os.path.join(run_dir, EVAL_REWARDS))
    if not (has_rl or has_training or has_eval):
        raise TextRLError(
            f"run_dir: got {run_dir!r}; expected a textrl run directory holding metrics.jsonl "
            f"(stage=rl, sft or rm) or {EVAL_REWARDS} (stage=eval)"
        )
    written = []
    if has_rl:
        written.append(write_rl_report(run_dir))
    if has_training:
        stage = (saved_summary(run_dir) or saved_config(run_dir) or {}).get("stage")
        written.append(write_training_report(run_dir, stage if stage in ("sft", "rm") else "training"))
    if has_eval:
        written.append(write_eval_report(run_dir))
    return written
