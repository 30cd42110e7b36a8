"""Every metric name textrl reports, with its unit and meaning: the one table (:data:`METRICS`)
that the algorithm contract (:data:`EPISODE_METRICS`), the lifecycle hooks' documentation
(:mod:`textrl.hookspecs`), the console logger's headline and the README refer to.

Names are ``<family>/<name>``; a name with ``<...>`` stands for a family of names
(``reward/<label>``: one per composite component). Plugins may report names of their own beside
these (GRPO's ``loss/kl``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric: ``unit`` (``nats``, ``tokens``, ``1`` for a plain number, ...), the ``stages``
    that report it and what it means."""

    unit: str
    stages: tuple[str, ...]
    meaning: str


RL, SFT, RM, EVAL = ("rl",), ("sft",), ("rm",), ("eval",)

METRICS: dict[str, Metric] = {
    # every algorithm's update (the contract: textrl.algorithms.base)
    "objective/kl": Metric(
        "nats",
        RL,
        "mean KL(π‖π_ref) per episode (k1 summed over the response's tokens, from the untruncated log-probs)",
    ),
    "objective/score": Metric("1", RL, "mean reward-model score r_RM(x, y) per episode"),
    "objective/rlhf_reward": Metric(
        "1", RL, "mean KL-shaped return r_RM − β·Σ_t KL_t per episode (KL_t by algo.kl.estimator)"
    ),
    "kl/beta": Metric("1", RL, "the KL coefficient β used in this update (before the controller's step)"),
    "episode/length": Metric("tokens", RL, "mean response length"),
    "loss/total": Metric("1", RL, "the minimised loss, mean over optimizer steps"),
    "policy/grad_norm": Metric("1", RL, "global gradient norm before clipping, mean over optimizer steps"),
    # PPO, PPO-ptx, REINFORCE
    "loss/policy": Metric("1", RL, "policy-gradient loss (clipped surrogate for PPO), mean over steps"),
    "loss/value": Metric("1", RL, "clipped value loss (PPO), mean over steps"),
    "loss/ptx": Metric("nats", RL, "PPO-ptx's pretraining cross-entropy per token, mean over steps"),
    "policy/clipfrac": Metric("fraction", RL, "share of response tokens whose ratio was clipped"),
    "policy/approxkl": Metric("nats", RL, "approximate KL(π_old‖π) per token over the update's steps"),
    "policy/entropy": Metric("nats", RL, "mean per-token entropy of the sampling distribution, under training"),
    "policy/advantage_std": Metric("1", RL, "REINFORCE: std of the advantages (return − baseline)"),
    "objective/entropy": Metric("nats", RL, "mean per-episode entropy estimate of the rollout (−Σ_t log π)"),
    "val/explained_variance": Metric("1", RL, "1 − Var(returns − V)/Var(returns) over response tokens"),
    "val/clipfrac": Metric("fraction", RL, "share of value predictions that were clipped"),
    "val/mean": Metric("1", RL, "mean V(s_t) over response tokens"),
    # the rl stage
    "reward/<label>": Metric("1", RL, "a composite reward's component score (unweighted), mean per episode"),
    "perf/tokens_per_s": Metric("tokens/s", RL, "response tokens per second of rollout + update (all processes)"),
    "perf/rollout_s": Metric("s", RL, "wall time of the rollout"),
    "perf/update_s": Metric("s", RL, "wall time of the update"),
    "turn/reward_mean": Metric(
        "1", RL, "env.turn_reward=model: mean reward per policy turn (each turn scored in context)"
    ),
    "turn/reward_<k>": Metric("1", RL, "env.turn_reward=model: mean reward of the episodes' k-th policy turn"),
    "skipped/nonfinite": Metric("1", RL, "1 in the record of an update dropped by trainer.on_nonfinite=skip"),
    # sft and rm
    "train/loss": Metric("nats", SFT + RM, "training loss since the previous record (per token for sft)"),
    "train/accuracy": Metric("fraction", RM, "training accuracy since the previous record"),
    "train/learning_rate": Metric("1", SFT + RM, "the schedule's learning rate"),
    "train/grad_norm": Metric("1", SFT, "gradient norm before clipping"),
    "train/epoch": Metric("epochs", SFT + RM, "epochs done (fractional)"),
    "eval/loss": Metric("nats", SFT + RM, "held-out loss (before training at step 0, after at the last step)"),
    "eval/pairwise_accuracy": Metric("fraction", RM, "held-out share of ranked pairs the RM orders correctly"),
    "eval/accuracy": Metric("fraction", RM, "held-out classification accuracy (rm.objective=classification)"),
    # the eval stage (eval.json, flattened)
    "eval/win_rate": Metric(
        "fraction", EVAL, "share of prompts where the policy's response outscores the reference's (ties count half)"
    ),
    "eval/kl": Metric("nats", EVAL, "mean KL(policy‖reference) per response, k1 on the policy's samples"),
    "eval/prompts": Metric("prompts", EVAL, "held-out prompts evaluated"),
    "eval/<model>/mean_reward": Metric("1", EVAL, "mean reward of ``policy`` or ``reference``"),
    "eval/<model>/median_reward": Metric("1", EVAL, "median reward of ``policy`` or ``reference``"),
    "eval/<model>/mean_length": Metric("tokens", EVAL, "mean response length of ``policy`` or ``reference``"),
    "eval/<model>/turn_reward_<k>": Metric(
        "1", EVAL, "env.turn_reward=model: mean reward of the k-th policy turn (k = mean: of every turn)"
    ),
}
"""Every metric name textrl reports → its :class:`Metric`."""

EPISODE_METRIC_NAMES = ("objective/kl", "objective/score", "objective/rlhf_reward", "kl/beta", "episode/length")
"""The metrics every :meth:`textrl.Algorithm.update` returns (the contract)."""


def metric(name: str) -> Metric | None:
    """The :class:`Metric` of ``name`` (matching families such as ``reward/<label>``), or ``None``
    for a name textrl does not report itself (a plugin's own)."""
    if name in METRICS:
        return METRICS[name]
    for pattern, entry in METRICS.items():
        if "<" in pattern and re.fullmatch("[^/]+".join(map(re.escape, re.split(r"<[^>]+>", pattern))), name):
            return entry
    return None


def describe(name: str) -> str:
    """``"<meaning>, <unit>"`` for ``name`` (the unit left out when it is a plain number)."""
    entry = metric(name)
    if entry is None:
        return name
    return entry.meaning + ("" if entry.unit == "1" else f", {entry.unit}")
