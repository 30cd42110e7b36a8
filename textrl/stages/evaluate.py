"""Stage ``eval``: the trained policy against its reference on held-out prompts.

Both models answer the same prompts (``eval.num_prompts`` of them: drawn at random, seeded, from
``eval.prompts`` when set, e.g. IMDB's test reviews; else ``data.eval_prompts`` held out from RL,
or the first of ``data.prompts``), sampled with ``rollout.*``; the reward model (``reward.*``)
scores every response. Reported: mean and median reward of each, the policy's win rate under the
reward model (ties count half), the mean KL of the policy to the reference on its own samples (k1,
nats per response, from the temperature-scaled untruncated log-probs of both, whatever
top-k/top-p sampled), and mean response lengths (tokens). With a reward model that reports an
exact-match component ``correct`` (e.g. ``reward=arithmetic``), each block also has ``accuracy``;
with an interaction (multi-turn episodes), each block has the policy turns per episode, the
episode length (policy and env tokens) and, for a tool interaction (one with stop strings), the
tool-call rate (episodes with at least one call) and calls per episode, and with
``env.turn_reward=model`` the mean reward per policy turn and per turn index (see
:func:`episode_stats`); ``eval_samples.jsonl`` then holds whole transcripts (and each turn's reward). Written to ``eval.json``,
``eval_samples.jsonl`` (``eval.samples`` examples), ``eval_rewards.jsonl`` (both rewards of every
prompt) and drawn as before/after histograms in ``eval_report.png``; reported through the hooks as
one ``eval/*`` metrics record (metrics.jsonl, wandb with the figure) and, by the console logger, as
a table.
"""

from __future__ import annotations

import os

import torch
from omegaconf import OmegaConf

from textrl.algorithms.kl import episode_kl
from textrl.data_sources import DataSources
from textrl.io import append_jsonl, atomic_write_json, atomic_write_text, jsonl_line
from textrl.policies.policy import PolicyWithValueHead
from textrl.precision import autocast
from textrl.report import EVAL_REWARDS, write_eval_report
from textrl.rollout.buffer import turn_metrics
from textrl.stages.build import build_rollout_parts, make_collector


def evaluate(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run the evaluation; returns the ``eval.json`` dict. Both rollouts use ``rollout.*``
    (sampling and ``rollout.engine``) and the same seed. Calls the lifecycle hooks of ``registry``
    (see :mod:`textrl.hookspecs`): one record of :func:`eval_metrics` at update 0.

    Raises:
        TextRLError: whatever building the parts raises (see :mod:`textrl.stages.build`).
    """
    hook = registry.manager.hook
    hook.textrl_on_stage_start(cfg=cfg, run_dir=run_dir)
    parts = build_rollout_parts(cfg, registry, device, "eval", sources=DataSources(registry.datasets))
    prompts, reference_lm = parts.prompts, parts.reference
    reference = PolicyWithValueHead(reference_lm).to(device)
    with autocast(device, cfg.trainer.precision):  # forward passes only (textrl.precision)
        ours = make_collector(cfg, parts.env, parts.policy, reference_lm, seed=cfg.seed).collect(prompts=prompts)
        theirs = make_collector(cfg, parts.env, reference, None, seed=cfg.seed).collect(prompts=prompts)
    wins = (ours.scores > theirs.scores).float() + 0.5 * (ours.scores == theirs.scores).float()
    stop_strings = parts.env.rules.stop_strings
    per_turn = cfg.env.turn_reward == "model"  # the env scored each policy turn
    result = {
        "prompts": len(prompts),
        "policy": episode_stats(ours, stop_strings, per_turn=per_turn, end_ids=parts.env.rules.end_ids),
        "reference": episode_stats(theirs, stop_strings, per_turn=per_turn, end_ids=parts.env.rules.end_ids),
        "win_rate": float(wins.mean()),
        "kl": float(episode_kl(ours.untruncated_logprobs, ours.ref_logprobs, ours.action_mask).mean()),
        "policy_model": OmegaConf.select(cfg, "policy.model") or f"policy={cfg.policy.name}",
        "reference_model": cfg.eval.reference,
    }
    atomic_write_json(os.path.join(run_dir, "eval.json"), result)
    samples_path = os.path.join(run_dir, "eval_samples.jsonl")
    turns = (ours.turn_rewards(), theirs.turn_rewards()) if per_turn else None
    for i in range(min(cfg.eval.samples, len(prompts))):
        row = {
            "prompt": prompts[i],
            "policy": ours.responses[i],
            "policy_reward": float(ours.scores[i]),
            "reference": theirs.responses[i],
            "reference_reward": float(theirs.scores[i]),
        }
        if turns is not None:
            row.update(policy_turn_rewards=turns[0][i], reference_turn_rewards=turns[1][i])
        append_jsonl(samples_path, row)
    atomic_write_text(
        os.path.join(run_dir, EVAL_REWARDS),
        "".join(
            jsonl_line({"prompt": p, "policy_reward": float(a), "reference_reward": float(b)})
            for p, a, b in zip(prompts, ours.scores.tolist(), theirs.scores.tolist())
        ),
    )
    write_eval_report(run_dir)  # before the loggers' end: wandb logs it
    hook.textrl_on_metrics(update=0, metrics=eval_metrics(result), samples=[])
    hook.textrl_on_stage_end(summary=result)
    return result


def episode_stats(
    batch, stop_strings: tuple[str, ...] = (), *, per_turn: bool = False, end_ids: tuple[int, ...] = ()
) -> dict[str, float]:
    """One model's block of ``eval.json`` from its :class:`~textrl.rollout.buffer.RolloutBatch`.

    Always: ``mean_reward``, ``median_reward`` (reward-model units), ``mean_length`` (tokens
    the policy sampled per episode), ``turns`` (policy turns per episode: runs of action tokens; 1
    for single-turn episodes) and ``episode_length`` (policy and env tokens after the prompt).
    ``accuracy``: the mean of the reward's ``correct`` component (fraction in [0, 1]) when it has
    one. With ``stop_strings`` (a tool interaction's: each occurrence in a
    transcript is one call) also ``tool_calls`` (calls per episode) and ``tool_call_rate``
    (fraction of episodes with at least one call). ``per_turn`` (the env scored each turn,
    ``env.turn_reward=model``) adds ``turn_reward_mean`` (mean reward per policy turn) and
    ``turn_reward_<k>`` (mean reward of the k-th turn, k = 1, 2, ...), from
    :meth:`~textrl.rollout.buffer.RolloutBatch.turn_rewards`. With ``end_ids`` (the env's
    :attr:`~textrl.envs.episode.EpisodeRules.end_ids`, no stop strings) also ``cut_at_budget``: the
    fraction of episodes whose last action is no end token, i.e. ended by a budget
    (``env.max_new_tokens`` mid-reply, ``env.max_episode_tokens``) instead of by the policy or the
    interaction.
    """
    stats = {
        "mean_reward": float(batch.scores.mean()),
        "median_reward": median(batch.scores),
        "mean_length": float(batch.action_mask.sum(1).mean()),
    }
    if "correct" in batch.reward_components:
        stats["accuracy"] = float(batch.reward_components["correct"].float().mean())
    actions = batch.action_mask > 0
    starts = actions[:, :1].sum(1) + (actions[:, 1:] & ~actions[:, :-1]).sum(1)
    T = batch.response_length
    stats["turns"] = float(starts.float().mean())
    stats["episode_length"] = float(batch.attention_mask[:, -T:].sum(1).float().mean()) if T else 0.0
    if stop_strings:
        calls = torch.tensor([float(sum(r.count(s) for s in stop_strings)) for r in batch.responses])
        stats["tool_calls"] = float(calls.mean())
        stats["tool_call_rate"] = float((calls > 0).float().mean())
    if per_turn:
        stats.update(turn_metrics(batch.turn_rewards(), prefix="turn_"))
    if end_ids and not stop_strings:
        last = (actions.long().cumsum(1) == actions.sum(1, keepdim=True)) & actions  # each row's last action
        tokens = batch.response_ids[last]
        stats["cut_at_budget"] = float(
            (~torch.isin(tokens, torch.tensor(end_ids, device=tokens.device))).float().mean()
        )
    return stats


def median(scores: torch.Tensor) -> float:
    """The median of ``scores`` (``FloatTensor[N]``, N ≥ 1): the mean of the two middle values
    when N is even (numpy's convention; ``torch.median`` would return the lower one)."""
    values = scores.detach().double().cpu().sort().values
    n = len(values)
    return float((values[(n - 1) // 2] + values[n // 2]) / 2)


def eval_metrics(result: dict, prefix: str = "eval") -> dict[str, float]:
    """The numbers of an eval result, flattened: ``{"policy": {"mean_reward": 0.4}}`` →
    ``{"eval/policy/mean_reward": 0.4}``; strings, lists and booleans are left out."""
    metrics = {}
    for key, value in result.items():
        if isinstance(value, dict):
            metrics.update(eval_metrics(value, f"{prefix}/{key}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[f"{prefix}/{key}"] = float(value)
    return metrics
