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
    that report it and what it means; ``healthy`` says what values a working run shows (bounds
    and relations to the settings, no measured figures: those are on the benchmark pages) and
    ``when_off`` what to check or change when it shows something else, naming the settings."""

    unit: str
    stages: tuple[str, ...]
    meaning: str
    healthy: str = ""
    when_off: str = ""


RL, SFT, RM, EVAL = ("rl",), ("sft",), ("rm",), ("eval",)

METRICS: dict[str, Metric] = {
    # every algorithm's update (the contract: textrl.algorithms.base)
    "objective/kl": Metric(
        "nats",
        RL,
        "mean KL(π‖π_ref) per episode (k1 summed over the response's tokens, from the untruncated log-probs)",
        healthy="≥ 0 on average (one episode's k1 sum can be negative); near 0 at the first update (the "
        "policy starts as π_ref), then rising and, with `algo.kl.adaptive=true`, steered toward `algo.kl.target`",
        when_off="far above `algo.kl.target` and still rising: the policy moves faster than β follows; raise "
        "`algo.kl.init` (the floor of β's baseline), lower `algo.kl.horizon` (the integral's time in updates), "
        "lower `algo.lr` or `algo.epochs`. Still 0 after several updates: the policy is not moving (see "
        "`policy/clipfrac`, `policy/grad_norm`)",
    ),
    "objective/score": Metric(
        "1",
        RL,
        "mean reward-model score r_RM(x, y) per episode",
        healthy="rises over the updates, on the reward model's scale (VADER's compound score lies in [−1, 1])",
        when_off="flat: more `trainer.updates`, a larger `algo.lr`, and read `samples.jsonl` to check that the "
        "reward sees what you expect (`reward.include_prompt`). Rising while the samples degrade: reward hacking",
    ),
    "objective/rlhf_reward": Metric(
        "1",
        RL,
        "mean KL-shaped return r_RM − β·Σ_t KL_t per episode (KL_t by algo.kl.estimator)",
        healthy="rises with `objective/score`, below it by β times the KL",
        when_off="falling while `objective/score` rises: the policy buys score with KL faster than the penalty "
        "allows; lower `algo.lr` or raise `algo.kl.init`",
    ),
    "kl/beta": Metric(
        "1",
        RL,
        "the KL coefficient β used in this update (before the controller's step)",
        healthy="`algo.kl.init` throughout with `algo.kl.adaptive=false`; otherwise below `algo.kl.init` while "
        "`objective/kl` is well below `algo.kl.target` (down to e^-2 of it), jumping up when the KL overshoots "
        "and climbing while it stays above (the PI controller: `AdaptiveKLController`)",
        when_off="rising every update for the whole run: the KL stays above its target (see `objective/kl`); "
        "falling toward 0: the KL stays below it, which is harmless, or lower `algo.kl.target`",
    ),
    "episode/length": Metric(
        "tokens",
        RL,
        "mean response length",
        healthy="between 1 and `env.max_new_tokens` per response, and not drifting to either end",
        when_off="pinned at `env.max_new_tokens`: responses never end with EOS (truncated; raise "
        "`env.max_new_tokens` if answers are cut off); collapsing toward 1: ending early pays under this "
        "reward, a form of reward hacking; read `samples.jsonl`",
    ),
    "loss/total": Metric(
        "1",
        RL,
        "the minimised loss, mean over optimizer steps",
        healthy="finite; an RL loss measures no progress (its targets move with every rollout), so look at "
        "`objective/score` instead",
        when_off="non-finite: the run stops (`trainer.on_nonfinite=error`) naming the quantity; lower `algo.lr`, "
        "keep `algo.max_grad_norm` set, or `trainer.on_nonfinite=skip`",
    ),
    "policy/grad_norm": Metric(
        "1",
        RL,
        "global gradient norm before clipping, mean over optimizer steps",
        healthy="finite and without sudden jumps; each step is clipped to `algo.max_grad_norm` when it is set",
        when_off="far above `algo.max_grad_norm` on every update: clipping decides every step's size; lower "
        "`algo.lr`. Spikes before a non-finite loss: lower `algo.lr`, or `trainer.precision=fp32`",
    ),
    # PPO, PPO-ptx, REINFORCE
    "loss/policy": Metric(
        "1",
        RL,
        "policy-gradient loss (clipped surrogate for PPO), mean over steps",
        healthy="small in magnitude with whitened advantages (`algo.whiten_advantages=true`); its sign and "
        "trend are no measure of progress",
        when_off="growing in magnitude over the run: the advantages grow; check `algo.whiten_advantages` and the "
        "reward's scale (`reward.normalize` for a learned reward model)",
    ),
    "loss/value": Metric(
        "1",
        RL,
        "clipped value loss (PPO), mean over steps",
        healthy="falls over the first updates as the value head learns, then follows the scale of the returns",
        when_off="growing: the returns' scale grows or the value head diverges; lower `algo.lr` or "
        "`algo.vf_coef`, or start the value head from the reward model (`algo.value_init=reward_model`)",
    ),
    "loss/ptx": Metric(
        "nats",
        RL,
        "PPO-ptx's pretraining cross-entropy per token, mean over steps",
        healthy="stays near its value at the first update: keeping it there is PPO-ptx's purpose",
        when_off="rising: the policy forgets the pretraining distribution; raise `algo.ptx_coef`",
    ),
    "policy/clipfrac": Metric(
        "fraction",
        RL,
        "share of response tokens whose ratio was clipped",
        healthy="in [0, 1] and well below 1/2: most tokens stay inside the trust region 1 ± `algo.clip_range`",
        when_off="high: each update moves the policy too far; lower `algo.lr` or `algo.epochs`, or raise "
        "`algo.minibatch_size`. 0 on every update: the policy does not move between the rollout and its "
        "optimizer steps (one step per update: `algo.epochs=1` with `algo.minibatch_size` = `rollout.batch_size`)",
    ),
    "policy/approxkl": Metric(
        "nats",
        RL,
        "approximate KL(π_old‖π) per token over the update's steps",
        healthy="≥ 0 and small next to `objective/kl`: it is one update's move, per token",
        when_off="rising with `policy/clipfrac`: updates too large; lower `algo.lr` or `algo.epochs`",
    ),
    "policy/entropy": Metric(
        "nats",
        RL,
        "mean per-token entropy of the sampling distribution, under training",
        healthy="> 0, declining slowly as the policy sharpens",
        when_off="falling fast toward 0: the policy collapses onto a few tokens, often with reward hacking; "
        "raise `algo.kl.init` or set `algo.ent_coef` > 0 (PPO). Rising steadily: the policy drifts toward "
        "noise; lower `algo.lr`",
    ),
    "policy/advantage_std": Metric(
        "1",
        RL,
        "REINFORCE: std of the advantages (return − baseline)",
        healthy="> 0: the episodes' returns differ from their baseline",
        when_off="0: every episode has the same advantage and the update learns nothing (with "
        "`algo.baseline=leave_one_out`, every group's `rollout.samples_per_prompt` responses scored alike); "
        "sample more varied responses (`rollout.temperature`) or use a finer reward",
    ),
    "objective/entropy": Metric(
        "nats",
        RL,
        "mean per-episode entropy estimate of the rollout (−Σ_t log π)",
        healthy="> 0; grows with `episode/length` and shrinks slowly as the policy sharpens",
        when_off="near 0: the responses have become deterministic (mode collapse); see `policy/entropy`",
    ),
    "val/explained_variance": Metric(
        "1",
        RL,
        "1 − Var(returns − V)/Var(returns) over response tokens",
        healthy="≤ 1; near or below 0 at the start with `algo.value_init=zeros`, then rising toward 1",
        when_off="staying ≤ 0: the value head does not learn the returns, so GAE's advantages are noise; raise "
        "`algo.vf_coef`, or `algo.value_init=reward_model` with a learned reward model",
    ),
    "val/clipfrac": Metric(
        "fraction",
        RL,
        "share of value predictions that were clipped",
        healthy="in [0, 1] and well below 1/2",
        when_off="high: the value predictions move far in one update; raise `algo.clip_range_value` or lower `algo.lr`",
    ),
    "val/mean": Metric(
        "1",
        RL,
        "mean V(s_t) over response tokens",
        healthy="follows the returns: on the scale of `objective/rlhf_reward`",
        when_off="drifting away from the returns: see `val/explained_variance` and `loss/value`",
    ),
    # the rl stage
    "reward/<label>": Metric(
        "1",
        RL,
        "a composite reward's component score (unweighted), mean per episode",
        healthy="each on its component's own scale, moving the way its weight asks",
        when_off="one component rising while another falls: the policy trades one for the other; change the "
        "weights in `reward.components`",
    ),
    "perf/sampled_tokens": Metric(
        "tokens",
        RL,
        "tokens sampled for the update: the batch's actions plus, with branching (`algo.branch`), every "
        "token the branched continuations sampled (never trained on): the budget algorithms are compared at",
        healthy="about `rollout.batch_size` × the mean episode length without branching; with branching, "
        "about `algo.branch.k` times more per branched state",
        when_off="far above the batch's own tokens: fewer branched states (`algo.branch.at`, `algo.branch.every`) "
        "or a smaller `algo.branch.k`",
    ),
    "branch/states": Metric(
        "1",
        RL,
        "states branched per episode (VinePPO): each gets a Monte Carlo value from `algo.branch.k` continuations",
        healthy="≥ 1 (the prompt is always branched); more with `algo.branch.at=newlines` or `tokens`",
        when_off="1 when more were meant: the policy writes no newline (`algo.branch.at=tokens` instead)",
    ),
    "branch/value_std": Metric(
        "1",
        RL,
        "mean spread (standard deviation) of the continuations' returns at a branched state (VinePPO)",
        healthy="above 0 while the policy still has something to learn; shrinking as it becomes sure",
        when_off="0 everywhere: every continuation scores alike and the advantages are only the KL penalty's; "
        "raise `rollout.temperature` or `algo.branch.k`",
    ),
    "perf/tokens_per_s": Metric(
        "tokens/s",
        RL,
        "sampled tokens (`perf/sampled_tokens`) per second of rollout + update (all processes)",
        healthy="steady over a run; the rollout and PPO-update benchmark pages give figures to compare on the "
        "same kind of machine",
        when_off="low on a CPU: `trainer.threads` (torch's CPU threads), fewer `env.max_new_tokens`; see the "
        "troubleshooting page",
    ),
    "perf/rollout_s": Metric(
        "s",
        RL,
        "wall time of the rollout",
        healthy="steady from update to update",
        when_off="rising over the run: the responses grow longer (`episode/length`), or the machine is short "
        "of memory or cores",
    ),
    "perf/update_s": Metric(
        "s",
        RL,
        "wall time of the update",
        healthy="steady from update to update",
        when_off="rising over the run: longer responses (`episode/length`); large from the start: fewer "
        "`algo.epochs`, or a smaller `algo.micro_batch_size` when memory is short",
    ),
    "perf/gather_s": Metric(
        "s",
        RL,
        "trainer.sharding=fsdp: wall time of gathering the sharded weights before the rollout (the policy's "
        "with trainer.rollout_gather=whole, and the reward model's); part of perf/rollout_s",
        healthy="a small part of `perf/rollout_s`, steady from update to update",
        when_off="a large part of `perf/rollout_s`: the all-gathers are slow (the processes' interconnect); "
        "with `trainer.rollout_gather=per_layer` the policy's gathers happen at every token step instead and "
        "show in `perf/rollout_s`",
    ),
    "turn/reward_mean": Metric(
        "1",
        RL,
        "env.turn_reward=model: mean reward per policy turn (each turn scored in context)",
        healthy="rises over the updates, on the reward model's scale",
        when_off="flat while `objective/score` rises: the final turn improves and the others do not; see "
        "`turn/reward_<k>`",
    ),
    "turn/reward_<k>": Metric(
        "1",
        RL,
        "env.turn_reward=model: mean reward of the episodes' k-th policy turn",
        healthy="every turn's rises, not only the last one's",
        when_off="a later turn falling: the episode runs out of room; raise `env.max_episode_tokens` or "
        "`env.max_turns`",
    ),
    "skipped/nonfinite": Metric(
        "1",
        RL,
        "1 in the record of an update dropped by trainer.on_nonfinite=skip",
        healthy="absent: no update was dropped",
        when_off="present: an update had a non-finite loss or gradient; a few are tolerable, many mean the "
        "run diverges (lower `algo.lr`, `trainer.precision=fp32`; see the troubleshooting page)",
    ),
    # sft and rm
    "train/loss": Metric(
        "nats",
        SFT + RM,
        "training loss since the previous record (per token for sft)",
        healthy="falls, fast at first; for `rm.objective=ranking`, log 2 ≈ 0.69 nats is chance (equal scores)",
        when_off="flat: a larger `sft.lr` / `rm.lr` or more `sft.epochs` / `rm.epochs`; jumping up: a smaller "
        "learning rate",
    ),
    "train/accuracy": Metric(
        "fraction",
        RM,
        "training accuracy since the previous record",
        healthy="rises above chance (1/2 for pairs)",
        when_off="stays near chance: check the pairs (`rm.data`, `rm.prompt_format`), raise `rm.lr` or `rm.epochs`",
    ),
    "train/learning_rate": Metric(
        "1",
        SFT + RM,
        "the schedule's learning rate",
        healthy="warms up over the first `sft.warmup_ratio` (`rm.warmup_ratio`) of the steps to `sft.lr` "
        "(`rm.lr`), then decays along a cosine",
        when_off="the schedule is set by the config alone: a curve you did not expect means other settings "
        "than you thought (`textrl --cfg job`)",
    ),
    "train/grad_norm": Metric(
        "1",
        SFT,
        "gradient norm before clipping",
        healthy="finite and without sudden jumps",
        when_off="spikes with a rising `train/loss`: lower `sft.lr`",
    ),
    "train/epoch": Metric(
        "epochs",
        SFT + RM,
        "epochs done (fractional)",
        healthy="reaches `sft.epochs` (`rm.epochs`) at the last step",
        when_off="stops early: the run was interrupted; see the checkpoints guide",
    ),
    "eval/loss": Metric(
        "nats",
        SFT + RM,
        "held-out loss (before training at step 0, after at the last step)",
        healthy="lower after training than before",
        when_off="higher after training, or far above the last `train/loss`: overfitting; fewer `sft.epochs`, "
        "a smaller learning rate, or more data (`sft.max_examples`, `rm.max_examples`)",
    ),
    "eval/pairwise_accuracy": Metric(
        "fraction",
        RM,
        "held-out share of ranked pairs the RM orders correctly",
        healthy="above 1/2 (chance) after training, and above its value before training",
        when_off="at or below chance: the RM learned nothing that generalises; more data (`rm.max_examples`), "
        "`rm.epochs`, or check that `rm.eval_data` comes from the same distribution",
    ),
    "eval/accuracy": Metric(
        "fraction",
        RM,
        "held-out classification accuracy (rm.objective=classification)",
        healthy="above the share of the most frequent label",
        when_off="at the most frequent label's share: the classifier predicts one label; check `rm.labels` and "
        "`rm.label_field`",
    ),
    # the eval stage (eval.json, flattened)
    "eval/win_rate": Metric(
        "fraction",
        EVAL,
        "share of prompts where the policy's response outscores the reference's (ties count half)",
        healthy="1/2 when the policy is the reference; above 1/2 after RL against the same reward",
        when_off="at or below 1/2 after training: the policy did not improve under this reward (check the "
        "RL run's `objective/score`); high with a large `eval/kl`: read `eval_samples.jsonl` for reward hacking",
    ),
    "eval/kl": Metric(
        "nats",
        EVAL,
        "mean KL(policy‖reference) per response, k1 on the policy's samples",
        healthy="≥ 0 on average, near the RL run's final `objective/kl` when the reference is π_ref",
        when_off="far above the RL run's `algo.kl.target`: see `objective/kl`",
    ),
    "eval/prompts": Metric(
        "prompts",
        EVAL,
        "held-out prompts evaluated",
        healthy="`eval.num_prompts`, or all the prompts there are when fewer",
        when_off="fewer than you asked for: the prompt source is short (`eval.prompts`, `data.eval_prompts`)",
    ),
    "eval/<model>/mean_reward": Metric(
        "1",
        EVAL,
        "mean reward of ``policy`` or ``reference``",
        healthy="the policy's above the reference's after RL",
        when_off="the policy's at or below the reference's: see `eval/win_rate`",
    ),
    "eval/<model>/median_reward": Metric(
        "1",
        EVAL,
        "median reward of ``policy`` or ``reference``",
        healthy="moves with the mean; far from it, a few outliers decide the mean",
        when_off="mean up, median flat: a few responses gained a lot; read `eval_samples.jsonl`",
    ),
    "eval/<model>/mean_length": Metric(
        "tokens",
        EVAL,
        "mean response length of ``policy`` or ``reference``",
        healthy="the policy's near the reference's, unless the task asks for other lengths",
        when_off="the policy's much shorter or at the `env.max_new_tokens` limit: see `episode/length`",
    ),
    "eval/<model>/cut_at_budget": Metric(
        "1",
        EVAL,
        "fraction of episodes a budget ended (the last action is no end token: a reply cut at "
        "`env.max_new_tokens`, or `env.max_episode_tokens` spent) instead of the policy or the interaction",
        healthy="near 0; the policy's no higher than the reference's",
        when_off="higher after RL: the policy writes longer replies than the budget allows, which also ends "
        "multi-turn conversations early; raise `env.max_new_tokens` or check whether the reward pays for length",
    ),
    "eval/<model>/turn_reward_<k>": Metric(
        "1",
        EVAL,
        "env.turn_reward=model: mean reward of the k-th policy turn (k = mean: of every turn)",
        healthy="the policy's above the reference's on every turn",
        when_off="better on the last turn only: see `turn/reward_<k>`",
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
