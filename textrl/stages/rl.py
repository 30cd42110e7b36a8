"""Stage ``rl``: PPO (or any algorithm plugin) against a reward model, the InstructGPT RL stage.

Per update: collect ``rollout.batch_size`` episodes through the vector env, run the algorithm's
update, call the ``textrl_on_update_end`` hooks (metrics.jsonl, samples.jsonl, console, wandb).
At the end the policy is saved to ``<run_dir>/policy`` and ``summary.json`` is written, both
atomically, and ``report.png`` is drawn from ``metrics.jsonl`` (:mod:`textrl.report`).
"""

from __future__ import annotations

import inspect
import logging
import os
import time

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from textrl.config import build_plugin
from textrl.devices import autocast
from textrl.distributed import (broadcast_object, gather_states, make_accelerator, mean_across_processes,
                                rank_and_size, replica_max_abs_diff)
from textrl.checkpoint import (find_resume_checkpoint, list_checkpoints, load_checkpoint, remove_checkpoints_after,
                               restore_checkpoint, rng_state, save_checkpoint, truncate_jsonl)
from textrl.errors import NonFiniteError, TextRLError
from textrl.records import format_prompt
from textrl.envs.prompts import load_prompts
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.io import atomic_save_dir, atomic_write_json
from textrl.loggers import JsonlLogger, make_logger
from textrl.policies.hf_causal_lm import PolicyWithValueHead, load_tokenizer
from textrl.policies.lora import LoraSettings
from textrl.policies.reference import make_reference
from textrl.policies.sampling import SamplingConfig
from textrl.report import write_rl_report_quietly
from textrl.rollout.collector import RolloutCollector

log = logging.getLogger(__name__)


def load_prompt_split(cfg, tokenizer) -> tuple[list[str], list[str]]:
    """``(train_prompts, eval_prompts)``: ``data.eval_prompts`` holds out the last k prompts for
    ``stage=eval``. Prompts are raw text; :func:`prompt_formatter` writes them for the policy.

    Raises:
        TextRLError: holding out every prompt.
    """
    d = cfg.data
    prompts = load_prompts(d.prompts, text_field=d.text_field, split=d.split, max_prompts=d.max_prompts,
                           prefix_tokens=d.prefix_tokens, tokenizer=tokenizer, seed=cfg.seed)
    k = d.eval_prompts or 0
    if k >= len(prompts):
        raise TextRLError(f"data.eval_prompts: got {k}; expected fewer than the {len(prompts)} prompts")
    return (prompts[:-k], prompts[-k:]) if k else (prompts, [])


def prompt_formatter(cfg, tokenizer):
    """``str -> str`` writing a raw prompt in ``data.prompt_format`` (None when it is ``none``)."""
    if cfg.data.prompt_format == "none":
        return None
    format_prompt(tokenizer, "check", cfg.data.prompt_format)  # fail early on a bad format
    return lambda prompt: format_prompt(tokenizer, prompt, cfg.data.prompt_format)


def build_reward(cfg, registry, device):
    """The reward model for ``cfg.reward`` (``device: auto`` becomes the run's device)."""
    node = OmegaConf.to_container(cfg.reward, resolve=True)
    if node.get("device") == "auto":
        node["device"] = str(device)  # the run's device, not a second guess
    return build_plugin("reward", node, registry.rewards)


def sample_rows(batch, n: int) -> list[dict]:
    """The first ``n`` episodes of ``batch`` as samples-file rows: prompt, response, score, each
    reward component and, when the reward model explains itself, its ``details`` (which rules fired)."""
    rows = []
    for i in range(min(n, batch.batch_size)):
        row = {"prompt": batch.prompts[i], "response": batch.responses[i], "score": float(batch.scores[i])}
        row.update({f"reward/{k}": float(v[i]) for k, v in batch.reward_components.items()})
        if batch.reward_details is not None:
            row["details"] = batch.reward_details[i]
        rows.append(row)
    return rows


def check_trainer(trainer) -> None:
    """Raise :class:`TextRLError` for trainer settings that cannot work (named, with what is allowed)."""
    if trainer.updates < 1:
        raise TextRLError(f"trainer.updates: got {trainer.updates}; expected a positive integer")
    if trainer.checkpoint_every < 0:
        raise TextRLError(f"trainer.checkpoint_every: got {trainer.checkpoint_every}; expected 0 (only at the end) "
                          f"or a positive number of updates")
    if trainer.keep_checkpoints < 1:
        raise TextRLError(f"trainer.keep_checkpoints: got {trainer.keep_checkpoints}; expected at least 1")
    if trainer.on_nonfinite not in ("error", "skip"):
        raise TextRLError(f"trainer.on_nonfinite: got {trainer.on_nonfinite!r}; expected 'error' or 'skip'")


def resume(cfg, run_dir: str, policy, algorithm, collector, accelerator) -> tuple[int, list[float]]:
    """``(first update to run, mean scores of the updates already done)``.

    With ``trainer.resume`` pointing at a checkpoint, restore it (policy, optimizer, KL
    controller, RNGs, prompt sampler) and cut ``metrics.jsonl``/``samples.jsonl`` back to its
    update, so every update has exactly one record; otherwise start at update 1 (a fresh run in
    a used directory also starts those files afresh).

    Raises:
        TextRLError: a resume path without a checkpoint, or a checkpoint of another config.
    """
    rank, _ = rank_and_size(accelerator)
    path = find_resume_checkpoint(cfg.trainer.resume, run_dir)
    done = 0
    if path is not None:
        state = load_checkpoint(path, cfg)
        done = restore_checkpoint(state, policy, algorithm, collector, rank)
        log.info("resumed from %s at update %d", path, done + 1)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # every process has read the files before they are cut
    scores = []
    if rank == 0:
        kept = truncate_jsonl(os.path.join(run_dir, "metrics.jsonl"), done)
        truncate_jsonl(os.path.join(run_dir, "samples.jsonl"), done)
        remove_checkpoints_after(run_dir, done)  # a later run's leftovers would be resumed or pruned wrongly
        scores = [r["objective/score"] for r in kept if "objective/score" in r]
    return done + 1, broadcast_object(scores, accelerator)


def checkpoint(cfg, run_dir: str, update: int, policy, algorithm, collector, accelerator) -> None:
    """Write the checkpoint of ``update`` (main process; every process's sampler state in it)."""
    processes = gather_states({"collector": collector.state_dict(), "rng": rng_state()}, accelerator)
    if accelerator is None or accelerator.is_main_process:
        save_checkpoint(run_dir, update, cfg, policy, algorithm, processes, keep=cfg.trainer.keep_checkpoints)
    if accelerator is not None:
        accelerator.wait_for_everyone()


def on_nonfinite(error: NonFiniteError, update: int, cfg, run_dir: str) -> dict:
    """``trainer.on_nonfinite``: ``error`` stops the run naming the quantity, the update and the
    last good checkpoint (left intact); ``skip`` warns and returns the update's metrics record.

    Raises:
        TextRLError: with ``on_nonfinite=error`` (:func:`check_trainer` has validated the value).
    """
    if cfg.trainer.on_nonfinite == "skip":
        log.warning("update %d: %s; skipped the rest of this batch (trainer.on_nonfinite=skip)", update, error)
        return {"skipped/nonfinite": 1.0}
    found = list_checkpoints(run_dir)
    last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
    raise TextRLError(f"update {update}: {error.quantity} is not finite ({error}); stopped "
                      f"(trainer.on_nonfinite=error; {last})")


def train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run the RL stage; returns the summary dict (also written to ``summary.json``).

    The jsonl logger (metrics.jsonl, samples.jsonl in ``run_dir``) and the ``logger.name``
    logger are registered as plugins for the duration of the stage, on the main process only
    when several processes run (``accelerate launch``; see :mod:`textrl.distributed`).

    Raises:
        TextRLError: ``rollout.batch_size`` not divisible by the number of processes, and
            whatever the parts raise (see their docstrings).
    """
    accelerator = make_accelerator(device)
    main = accelerator is None or accelerator.is_main_process
    loggers = (JsonlLogger(run_dir), make_logger(cfg.logger)) if main else ()
    names = [registry.manager.register(p) for p in loggers if p is not None]
    try:
        return _train(cfg, registry, run_dir, device, accelerator)
    finally:
        for name in names:
            registry.manager.unregister(name=name)


def _train(cfg, registry, run_dir: str, device: torch.device, accelerator) -> dict:
    start = time.perf_counter()
    autocast(device, cfg.trainer.precision)  # bad trainer settings fail before anything loads
    check_trainer(cfg.trainer)
    rank, processes = rank_and_size(accelerator)
    if cfg.rollout.batch_size % processes:
        raise TextRLError(f"rollout.batch_size: got {cfg.rollout.batch_size}; expected a multiple of the "
                          f"{processes} processes (each collects an equal share)")
    if processes > 1 and cfg.trainer.on_nonfinite == "skip":
        raise TextRLError("trainer.on_nonfinite: got 'skip' with several processes; expected 'error' (a batch "
                          "skipped on one process would leave the others waiting in the gradient all-reduce)")
    minibatch = cfg.algo.get("minibatch_size") if hasattr(cfg.algo, "get") else None
    if processes > 1 and isinstance(minibatch, int) and (cfg.rollout.batch_size // processes) % minibatch:
        raise TextRLError(f"algo.minibatch_size: got {minibatch}; expected a divisor of the per-process batch "
                          f"rollout.batch_size / processes = {cfg.rollout.batch_size // processes}")
    if accelerator is not None and device.type == "cuda":
        device = accelerator.device  # one GPU per process
    main = rank == 0
    tokenizer = load_tokenizer(cfg.policy.model, cfg.policy.gguf_file)
    policy = PolicyWithValueHead.from_pretrained(cfg.policy.model, cfg.policy.gguf_file, cfg.policy.dtype,
                                                 tokenizer=tokenizer, dropout=cfg.policy.dropout, device=device,
                                                 lora=LoraSettings(**cfg.policy.lora))
    reference = make_reference(policy)  # a frozen copy, or the LoRA policy with its adapters off
    if cfg.policy.lora.r and cfg.policy.lora.dropout:
        log.warning("policy.lora.dropout=%s has no effect in RL: the policy runs in eval mode so rollout and "
                    "training log-probs agree", cfg.policy.lora.dropout)
    prompts, _ = load_prompt_split(cfg, tokenizer)
    reward_model = build_reward(cfg, registry, device)
    env = TokenGenVectorEnv(tokenizer, prompts, reward_model, num_envs=cfg.rollout.batch_size // processes,
                            max_new_tokens=cfg.env.max_new_tokens, max_prompt_tokens=cfg.env.max_prompt_tokens,
                            prompt_truncation=cfg.env.prompt_truncation, stop_on_eos=cfg.env.stop_on_eos,
                            device=device, autoreset_mode="disabled", format_prompt=prompt_formatter(cfg, tokenizer))
    sampling = SamplingConfig(cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p)
    algorithm = build_plugin("algo", OmegaConf.to_container(cfg.algo, resolve=True), registry.algorithms)
    offered = {"reward_model": reward_model, "tokenizer": tokenizer, "accelerator": accelerator}
    accepted = inspect.signature(algorithm.setup).parameters
    algorithm.setup(policy, reference, **{k: v for k, v in offered.items() if k in accepted})
    samples_per_prompt = getattr(algorithm, "samples_per_prompt", None) or cfg.rollout.samples_per_prompt
    # each process draws its own episodes: env slot seeds seed + rank*N + i never collide
    collector = RolloutCollector(env, policy, reference, sampling, seed=cfg.seed + rank * env.num_envs,
                                 samples_per_prompt=samples_per_prompt)

    start_update, scores = resume(cfg, run_dir, policy, algorithm, collector, accelerator)
    hook = registry.manager.hook
    if main:
        hook.textrl_on_train_start(cfg=cfg, run_dir=run_dir)
    bar = tqdm(range(start_update, cfg.trainer.updates + 1), desc="updates", initial=start_update - 1,
               total=cfg.trainer.updates, disable=not (cfg.trainer.progress_bar and main), dynamic_ncols=True)
    for update in bar:
        t0 = time.perf_counter()
        try:
            with autocast(device, cfg.trainer.precision):
                batch = collector.collect()
                t1 = time.perf_counter()
                metrics = algorithm.update(batch)
            metrics.setdefault("objective/score", float(batch.scores.mean()))  # for algorithms that omit it
        except NonFiniteError as e:
            metrics = on_nonfinite(e, update, cfg, run_dir)  # raises unless trainer.on_nonfinite=skip
            batch = None
        else:
            t2 = time.perf_counter()
            tokens = float(batch.response_mask.sum())
            metrics.update({"perf/tokens_per_s": tokens / (t2 - t0), "perf/rollout_s": t1 - t0,
                            "perf/update_s": t2 - t1})
            metrics.update({f"reward/{k}": float(v.mean()) for k, v in batch.reward_components.items()})
        metrics = mean_across_processes(metrics, accelerator)
        if processes > 1 and "perf/tokens_per_s" in metrics:
            metrics["perf/tokens_per_s"] *= processes  # every process's tokens in the same time
        if "objective/score" in metrics:
            scores.append(metrics["objective/score"])
        if main:
            samples = []
            if batch is not None and cfg.trainer.sample_every and update % cfg.trainer.sample_every == 0:
                samples = sample_rows(batch, cfg.trainer.samples_per_update)
            hook.textrl_on_update_end(update=update, metrics=metrics, samples=samples)
        every = cfg.trainer.checkpoint_every
        if (every and update % every == 0) or update == cfg.trainer.updates:
            checkpoint(cfg, run_dir, update, policy, algorithm, collector, accelerator)
        bar.set_postfix(score=f"{scores[-1] if scores else float('nan'):.3f}",
                        kl=f"{metrics.get('objective/kl', 0.0):.2f}")
    bar.close()
    if not scores:
        raise TextRLError(f"trainer.updates: got {cfg.trainer.updates}; every update was skipped or already done "
                          f"(resumed at update {start_update}); expected at least one update to run")

    replica_diff = replica_max_abs_diff(policy, accelerator)
    k = max(1, min(3, len(scores) // 3))
    summary = {
        "first_score": scores[0], "last_score": scores[-1],
        "first_score_mean3": sum(scores[:k]) / k, "last_score_mean3": sum(scores[-k:]) / k,
        "updates": len(scores), "episodes": len(scores) * cfg.rollout.batch_size,
        "wall_time_s": time.perf_counter() - start, "run_dir": run_dir, "processes": processes,
    }
    if processes > 1:
        summary["replica_max_abs_diff"] = replica_diff  # 0.0: every process holds the same policy
    if main:
        if cfg.trainer.save_policy:
            atomic_save_dir(os.path.join(run_dir, "policy"), lambda d: policy.save_pretrained(d, tokenizer))
        atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
        write_rl_report_quietly(run_dir, cfg)  # report.png, before the loggers' end (wandb logs it)
        hook.textrl_on_train_end(summary=summary)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return summary
