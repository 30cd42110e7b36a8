"""Stage ``rl``: PPO (or any algorithm plugin) against a reward model, the InstructGPT RL stage.

Per update: collect ``rollout.batch_size`` episodes through the vector env, run the algorithm's
update, call the ``textrl_on_metrics`` hooks (metrics.jsonl, samples.jsonl, console, wandb).
At the end the policy is saved to ``<run_dir>/policy``, ``report.png`` is drawn from
``metrics.jsonl`` (:mod:`textrl.report`) and ``summary.json`` is written (atomically). Optimizer
checkpoints (:mod:`textrl.checkpoint`, about 3x the policy's size with AdamW's two moments) are
written only when asked for: every ``trainer.checkpoint_every`` updates and at the end when it is
> 0, at the end of a run with ``trainer.resume`` set (so it can be extended again), and when a
stop signal ends the run early.

With ``trainer.sharding=fsdp`` the policy, π_ref and the reward model are sharded across the
processes (:mod:`textrl.sharding`): each rollout gathers the weights it needs
(``perf/gather_s``), checkpoints hold every process's shards, and the saved policy is consolidated.

Faults: SIGTERM/SIGINT stop the run at the next update boundary with a checkpoint there
(:mod:`textrl.signals`, :class:`~textrl.errors.Interrupted`); a failed write (full disk,
permission) is a :class:`~textrl.errors.WriteError` whose message names the last checkpoint and
how to resume from it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from textrl.algorithms.base import SetupContext, check_metrics
from textrl.config import build_plugin
from textrl.data_sources import DataSources
from textrl.distributed import (
    broadcast_object,
    gather_states,
    make_accelerator,
    max_across_processes,
    mean_across_processes,
    rank_and_size,
    replica_max_abs_diff,
)
from textrl.checkpoint import (
    SHARDED_DIR,
    checkpoint_dir,
    list_checkpoints,
    load_resume_checkpoint,
    remove_checkpoints_after,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    staging_dir,
    truncate_jsonl,
)
from textrl.errors import Interrupted, NonFiniteError, TextRLError, WriteError
from textrl.io import atomic_save_dir, atomic_write_json, writing
from textrl.precision import autocast
from textrl.report import kl_target, write_rl_report_quietly
from textrl.sharding import Sharding, reward_modules, stored_bytes
from textrl.rollout.engines import resolve_engine
from textrl.rollout.buffer import turn_metrics
from textrl.signals import StopSignals, send_test_signal, signal_name
from textrl.stages.build import RolloutParts, build_rollout_parts, make_collector, sampling_config

log = logging.getLogger(__name__)


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


def resume(cfg, run_dir: str, policy, algorithm, collector, accelerator, sharding=None) -> tuple[int, list[dict]]:
    """``(first update to run, metrics records of the updates already done)``.

    With ``trainer.resume`` pointing at a checkpoint, restore it (policy, optimizer, KL
    controller, RNGs, prompt sampler) and cut ``metrics.jsonl``/``samples.jsonl`` back to its
    update, so every update has exactly one record; otherwise start at update 1 (a fresh run in
    a used directory also starts those files afresh). ``auto`` skips damaged newer checkpoints
    with a warning (:func:`textrl.checkpoint.load_resume_checkpoint`). A sharded run (``sharding``)
    loads the policy's and the optimizer's shards on every process.

    Raises:
        TextRLError: a resume path without a checkpoint or to a damaged one, no readable
            checkpoint for ``auto`` among several, or a checkpoint of another config.
    """
    rank, _ = rank_and_size(accelerator)
    path, state = load_resume_checkpoint(cfg.trainer.resume, run_dir, cfg)
    done = 0
    if path is not None:
        shards = os.path.join(path, SHARDED_DIR) if sharding is not None else None
        done = restore_checkpoint(state, policy, algorithm, collector, rank, shards=shards, sharding=sharding)
        log.info("resumed from %s at update %d", path, done + 1)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # every process has read the files before they are cut
    history = []
    if rank == 0:
        kept = truncate_jsonl(os.path.join(run_dir, "metrics.jsonl"), done)
        history = [r for r in kept if "objective/score" in r]
        truncate_jsonl(os.path.join(run_dir, "samples.jsonl"), done)
        remove_checkpoints_after(run_dir, done)  # a later run's leftovers would be resumed or pruned wrongly
    return done + 1, broadcast_object(history, accelerator)


def checkpoint(cfg, run_dir: str, update: int, policy, algorithm, collector, accelerator, sharding=None) -> None:
    """Write the checkpoint of ``update`` (main process; every process's sampler state in it). A
    sharded run's processes first write their shards of the policy and optimizer into a staging
    directory (:func:`textrl.checkpoint.staging_dir`), which the main process moves into the
    checkpoint before its ``state.pt``."""
    processes = gather_states({"collector": collector.state_dict(), "rng": rng_state()}, accelerator)
    main = accelerator is None or accelerator.is_main_process
    shards = None
    if sharding is not None:
        shards = staging_dir(run_dir, update)
        if main:
            shutil.rmtree(shards, ignore_errors=True)  # a killed run's leftover
        sharding.barrier()
        with writing(shards):
            sharding.save(shards, policy, algorithm.optimizer)
    if main:
        save_checkpoint(
            run_dir, update, cfg, policy, algorithm, processes, keep=cfg.trainer.keep_checkpoints, shards=shards
        )
    if accelerator is not None:
        accelerator.wait_for_everyone()


def check_finite_metrics(metrics: dict) -> None:
    """Raise :class:`NonFiniteError` naming the first metric that is NaN or ±inf, so it follows
    ``trainer.on_nonfinite`` instead of reaching ``metrics.jsonl`` (strict JSON, no ``NaN``/``Infinity``)."""
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise NonFiniteError(name, f"{name} is {value}; expected a finite value")


def on_nonfinite(error: NonFiniteError, update: int, cfg, run_dir: str) -> dict:
    """``trainer.on_nonfinite``: ``error`` stops the run naming the quantity, the update and the
    last good checkpoint (left intact); ``skip`` warns and returns the update's metrics record.

    Raises:
        TextRLError: with ``on_nonfinite=error`` (:func:`textrl.config.check_config` has validated the value).
    """
    if cfg.trainer.on_nonfinite == "skip":
        log.warning("update %d: %s; skipped the rest of this batch (trainer.on_nonfinite=skip)", update, error)
        return {"skipped/nonfinite": 1.0}
    found = list_checkpoints(run_dir)
    last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
    raise TextRLError(
        f"update {update}: {error.quantity} is not finite ({error}); stopped (trainer.on_nonfinite=error; {last})"
    )


def train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run the RL stage; returns the summary dict (also written to ``summary.json``).

    The loggers are registered by :func:`textrl.stages.runner.run_logged` (the main process's
    only when several processes run; see :mod:`textrl.distributed`); the hooks are called on the
    main process only.

    Raises:
        TextRLError: ``rollout.batch_size`` not divisible by the number of processes, and
            whatever the parts raise (see their docstrings).
    """
    return _train(cfg, registry, run_dir, device, make_accelerator(device, cfg.trainer.sharding))


def _train(cfg, registry, run_dir: str, device: torch.device, accelerator) -> dict:
    start = time.perf_counter()
    check_run(cfg, device, accelerator)
    if accelerator is not None and device.type == "cuda":
        device = accelerator.device  # one GPU per process
    sharded = cfg.trainer.sharding == "fsdp"
    with StopSignals("after the current update and writing a checkpoint there") as stop:
        with Sharding(device, cfg.trainer.rollout_gather) if sharded else contextlib.nullcontext() as sharding:
            try:
                run = build(cfg, registry, device, accelerator, sharding)
                start_update, history = resume(
                    cfg, run_dir, run.policy, run.algorithm, run.collector, accelerator, sharding
                )
                history = loop(cfg, registry, run_dir, run, start_update, history, accelerator, stop=stop)
                return finish(cfg, registry, run_dir, run, history, time.perf_counter() - start, accelerator)
            except WriteError as e:
                raise WriteError(e.path, e.reason, e.errno, message=f"{e}; {how_to_resume(run_dir)}") from None


def how_to_resume(run_dir: str) -> str:
    """Where a stopped run can continue from and the command line that does it (one clause)."""
    found = list_checkpoints(run_dir)
    where = f"the last checkpoint is {found[-1]!r}" if found else "no checkpoint was written yet"
    return f"{where}; continue with trainer.resume=auto hydra.run.dir={run_dir}"


def check_run(cfg, device: torch.device, accelerator) -> None:
    """Fail on settings that cannot work before anything loads.

    Raises:
        TextRLError: bad sampling or engine settings for this device, settings sharding cannot run
            with (:func:`check_sharding`), or a batch the processes cannot share (every other
            setting is checked by :func:`textrl.config.check_config` at startup).
    """
    sampling_config(cfg)
    resolve_engine(cfg.rollout.engine, device)
    if cfg.trainer.sharding == "fsdp":
        check_sharding(cfg, device)
    _, processes = rank_and_size(accelerator)
    if cfg.rollout.batch_size % processes:
        raise TextRLError(
            f"rollout.batch_size: got {cfg.rollout.batch_size}; expected a multiple of the "
            f"{processes} processes (each collects an equal share)"
        )
    if processes > 1 and cfg.trainer.on_nonfinite == "skip":
        raise TextRLError(
            "trainer.on_nonfinite: got 'skip' with several processes; expected 'error' (a batch "
            "skipped on one process would leave the others waiting in the gradient all-reduce)"
        )
    minibatch = cfg.algo.get("minibatch_size") if hasattr(cfg.algo, "get") else None
    if processes > 1 and isinstance(minibatch, int) and (cfg.rollout.batch_size // processes) % minibatch:
        raise TextRLError(
            f"algo.minibatch_size: got {minibatch}; expected a divisor of the per-process batch "
            f"rollout.batch_size / processes = {cfg.rollout.batch_size // processes}"
        )


def check_sharding(cfg, device: torch.device) -> None:
    """Fail on settings that ``trainer.sharding=fsdp`` cannot run with.

    Raises:
        TextRLError: a device FSDP2 does not run on (it needs the CPU or CUDA), the compiled
            engine (a sharded policy decodes eagerly), or ``trainer.on_nonfinite=skip`` (a batch
            dropped between a sharded forward pass and its backward pass is not supported).
    """
    if torch.device(device).type not in ("cpu", "cuda"):
        raise TextRLError(
            f"trainer.sharding: got 'fsdp' on device {torch.device(device).type}; expected device=cpu or cuda"
        )
    if cfg.rollout.engine == "compiled":
        raise TextRLError(
            "rollout.engine: got 'compiled' with trainer.sharding=fsdp; expected eager or auto (a sharded "
            "policy decodes with the eager engine)"
        )
    if cfg.trainer.on_nonfinite == "skip":
        raise TextRLError(
            "trainer.on_nonfinite: got 'skip' with trainer.sharding=fsdp; expected 'error' (a sharded run "
            "cannot drop a batch between its forward and backward passes)"
        )


@dataclass
class RLRun:
    """What the RL stage trains with: the :class:`~textrl.stages.build.RolloutParts`, the
    ``algorithm``, the ``collector`` on this process's env, the ``device`` and, under
    ``trainer.sharding=fsdp``, the :class:`~textrl.sharding.Sharding` (else ``None``)."""

    parts: RolloutParts
    algorithm: object
    collector: object
    device: torch.device
    sharding: Sharding | None = None

    @property
    def policy(self):
        """The :class:`~textrl.policies.contract.Policy` being trained (``policy=<name>``'s)."""
        return self.parts.policy


def build(cfg, registry, device: torch.device, accelerator, sharding: Sharding | None = None) -> RLRun:
    """Policy, reference, reward model and env (:func:`build_rollout_parts`), the algorithm set up
    on them, and the collector (each process draws its own episodes: env slot seeds
    ``seed + rank·N + i`` never collide). The generated datasets of ``registry`` reach the prompts,
    the interaction and an algorithm factory that declares ``sources`` as one
    :class:`~textrl.data_sources.DataSources`.

    With ``sharding`` the policy and π_ref load on the CPU, the algorithm's setup shards the
    policy (after PPO's ``value_init`` has read the reward model), then π_ref and the reward model
    are sharded, and the collector decodes eagerly (in lockstep under ``rollout_gather=per_layer``)."""
    rank, processes = rank_and_size(accelerator)
    sources = DataSources(registry.datasets)
    parts = build_rollout_parts(
        cfg,
        registry,
        device,
        "rl",
        num_envs=cfg.rollout.batch_size // processes,
        sources=sources,
        weights_device=torch.device("cpu") if sharding is not None else None,
    )
    algorithm = build_plugin(
        "algo", OmegaConf.to_container(cfg.algo, resolve=True), registry.algorithms, sources=sources
    )
    algorithm.setup(
        parts.policy,
        parts.reference,
        SetupContext(
            reward_model=parts.reward_model,
            tokenizer=parts.tokenizer,
            accelerator=accelerator,
            precision=cfg.trainer.precision,
            sharding=sharding,
        ),
    )
    if sharding is not None:
        parts.reference = sharding.shard_reference(parts.reference)
        sharding.shard_reward(parts.reward_model)
    samples_per_prompt = getattr(algorithm, "samples_per_prompt", None) or cfg.rollout.samples_per_prompt
    if getattr(algorithm, "samples_per_prompt", None) and parts.env.num_envs % samples_per_prompt:
        raise TextRLError(  # the algorithm's own setting (GRPO's algo.group_size), not rollout.samples_per_prompt
            f"algo={cfg.algo.name}: got {samples_per_prompt} episodes per prompt; expected a divisor of the "
            f"{parts.env.num_envs} episodes per process (rollout.batch_size / processes)"
        )
    collector = make_collector(
        cfg,
        parts.env,
        parts.policy,
        parts.reference,
        seed=cfg.seed + rank * parts.env.num_envs,
        samples_per_prompt=samples_per_prompt,
        chunk_size=algorithm.micro_batch_size,
        branching=getattr(algorithm, "branching", None),
        engine="eager" if sharding is not None else None,
    )
    if sharding is not None:
        collector.lockstep = sharding.lockstep(parts.policy)
    if collector.lockstep is not None and collector.brancher is not None:
        raise TextRLError(  # a branch rollout is a decode loop of its own, which the other processes do not join
            f"trainer.rollout_gather: got 'per_layer' with algo={cfg.algo.name}, which branches its rollouts; "
            f"expected 'whole'"
        )
    return RLRun(parts, algorithm, collector, device, sharding)


def run_update(cfg, run: RLRun, update: int, run_dir: str):
    """One rollout + algorithm update: ``(metrics, batch)``; ``batch`` is ``None`` when
    ``trainer.on_nonfinite=skip`` dropped it. With ``env.turn_reward=model`` the metrics include
    ``turn/reward_mean`` and ``turn/reward_<k>`` (:func:`~textrl.rollout.buffer.turn_metrics`);
    a sharded run's, ``perf/gather_s``."""
    t0 = time.perf_counter()
    gathering = run.sharding.rollout(run.policy) if run.sharding is not None else contextlib.nullcontext()
    try:
        # the rollout: no weight changes inside
        with autocast(run.device, cfg.trainer.precision), gathering as gathered:
            batch = run.collector.collect()
        t1 = time.perf_counter()
        metrics = check_metrics(run.algorithm.update(batch), cfg.algo.name)  # autocast per forward pass
        check_finite_metrics(metrics)  # metrics.jsonl stays strict JSON: a NaN/inf follows trainer.on_nonfinite
    except NonFiniteError as e:
        return on_nonfinite(e, update, cfg, run_dir), None  # raises unless trainer.on_nonfinite=skip
    t2 = time.perf_counter()
    tokens = float(batch.action_mask.sum())
    sampled = tokens + (batch.branches.sampled_tokens if batch.branches is not None else 0)
    metrics.update({"perf/tokens_per_s": sampled / (t2 - t0), "perf/rollout_s": t1 - t0, "perf/update_s": t2 - t1})
    metrics["perf/sampled_tokens"] = sampled
    if gathered is not None:
        metrics["perf/gather_s"] = gathered.seconds
    metrics.update({f"reward/{k}": float(v.mean()) for k, v in batch.reward_components.items()})
    if cfg.env.turn_reward == "model":  # the env scored each turn
        metrics.update(turn_metrics(batch.turn_rewards()))
    return metrics, batch


def stop_signal(stop: StopSignals | None, accelerator) -> int:
    """The stop signal any process has received (0: none), the same on every process, so they all
    stop after the same update."""
    return int(max_across_processes(float(stop.signum or 0) if stop is not None else 0.0, accelerator))


def loop(
    cfg,
    registry,
    run_dir: str,
    run: RLRun,
    start_update: int,
    history: list[dict],
    accelerator,
    stop: StopSignals | None = None,
) -> list[dict]:
    """Updates ``start_update..trainer.updates``: each :func:`run_update`, its metrics averaged over
    processes and sent to the ``textrl_on_metrics`` hooks, checkpoints when asked for
    (:func:`checkpoint_due`). Returns ``history`` (the metrics records of the updates done before,
    as :func:`resume` read them) extended by the records of the updates run here.

    When ``stop`` has received SIGTERM/SIGINT, the loop ends at the next update boundary: the
    update in progress is finished, logged and checkpointed (if it is not the last update, the run
    then finishes normally).

    Raises:
        TextRLError: every update was skipped or already done.
        Interrupted: a stop signal arrived before the last update; the message names the
            checkpoint and how to resume.
    """
    rank, processes = rank_and_size(accelerator)
    main, hook = rank == 0, registry.manager.hook
    signum = stop_signal(stop, accelerator)
    if signum and start_update <= cfg.trainer.updates:  # arrived while loading: nothing new to save
        raise Interrupted(
            signum, f"stopped by {signal_name(signum)} before update {start_update}; {how_to_resume(run_dir)}"
        )
    if main:
        hook.textrl_on_stage_start(cfg=cfg, run_dir=run_dir)
    bar = tqdm(
        range(start_update, cfg.trainer.updates + 1),
        desc="updates",
        initial=start_update - 1,
        total=cfg.trainer.updates,
        disable=not (cfg.trainer.progress_bar and main),
        dynamic_ncols=True,
    )
    spent = sum(r.get("perf/sampled_tokens", 0.0) for r in history)  # trainer.token_budget, across a resume
    for update in bar:
        metrics, batch = run_update(cfg, run, update, run_dir)
        metrics = mean_across_processes(metrics, accelerator)
        for key in ("perf/tokens_per_s", "perf/sampled_tokens"):
            if processes > 1 and key in metrics:
                metrics[key] *= processes  # every process's tokens (in the same time)
        spent += metrics.get("perf/sampled_tokens", 0.0)
        spent_all = cfg.trainer.token_budget is not None and spent >= cfg.trainer.token_budget
        if "objective/score" in metrics:
            history.append({"update": update, **metrics})
        if main:
            samples = []
            if batch is not None and cfg.trainer.sample_every and update % cfg.trainer.sample_every == 0:
                samples = sample_rows(batch, cfg.trainer.samples_per_update)
            hook.textrl_on_metrics(update=update, metrics=metrics, samples=samples)
        send_test_signal(update)
        signum = stop_signal(stop, accelerator)
        if checkpoint_due(cfg, update, last=spent_all) or signum:
            checkpoint(cfg, run_dir, update, run.policy, run.algorithm, run.collector, accelerator, run.sharding)
        if signum and update < cfg.trainer.updates and not spent_all:
            bar.close()
            raise Interrupted(
                signum,
                f"stopped by {signal_name(signum)} after update {update} of "
                f"{cfg.trainer.updates}, checkpoint written to "
                f"{checkpoint_dir(run_dir, update)!r}; continue with trainer.resume=auto "
                f"hydra.run.dir={run_dir}",
            )
        score = history[-1]["objective/score"] if history else float("nan")
        bar.set_postfix(score=f"{score:.3f}", kl=f"{metrics.get('objective/kl', 0.0):.2f}")
        if spent_all:
            log.info("trainer.token_budget: %d tokens sampled after update %d; stopping", spent, update)
            break
    bar.close()
    if not history:
        raise TextRLError(
            f"trainer.updates: got {cfg.trainer.updates}; every update was skipped or already done "
            f"(resumed at update {start_update}); expected at least one update to run"
        )
    return history


def checkpoint_due(cfg, update: int, last: bool = False) -> bool:
    """Whether the loop writes an optimizer checkpoint after ``update`` (a stop signal writes one
    whatever this says): every ``trainer.checkpoint_every`` updates, and at the last update (the
    run's ``trainer.updates``-th, or ``last``: the token budget is spent) when
    ``trainer.checkpoint_every > 0`` or ``trainer.resume`` is set. A default run writes none:
    the policy it saves is what the user asked for, and the checkpoint (policy, AdamW state,
    RNGs) is about three times its size."""
    every = cfg.trainer.checkpoint_every
    if every and update % every == 0:
        return True
    return (last or update == cfg.trainer.updates) and bool(every or cfg.trainer.resume is not None)


def mean_of(history: list[dict], key: str, which: slice) -> float | None:
    """The mean of ``key`` over ``history[which]`` (records without it skipped); ``None`` if none has it."""
    values = [r[key] for r in history[which] if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def finish(cfg, registry, run_dir: str, run: RLRun, history: list[dict], wall_time_s: float, accelerator) -> dict:
    """Write ``<run_dir>/policy``, ``report.png`` and ``summary.json`` (main process, atomically),
    call the ``textrl_on_stage_end`` hooks and return the summary: first/last update's mean score
    and the means over the first/last k = min(3, updates // 3) updates (at least 1) of the score,
    ``objective/kl`` (``kl_last_mean3``, nats per episode) and ``policy/clipfrac``; ``policy_dir``
    and ``report_png`` (paths, ``None`` when not written); ``stored_bytes``: per process, the bytes
    it stores for the policy's, π_ref's and the reward model's parameters and the optimizer state
    (:func:`textrl.sharding.stored_bytes`). A sharded policy is consolidated on the main process
    before it is saved."""
    rank, processes = rank_and_size(accelerator)
    sharding = run.sharding
    replica_diff = replica_max_abs_diff(run.policy, accelerator) if sharding is None else None
    models = {"policy": run.policy, "reference": run.parts.reference}
    models.update({f"reward_model_{i}": m for i, m in enumerate(reward_modules(run.parts.reward_model))})
    stored = gather_states(stored_bytes(models, run.algorithm.optimizer), accelerator)
    full_state = sharding.full_state_dict(run.policy) if sharding is not None and cfg.trainer.save_policy else None
    k = max(1, min(3, len(history) // 3))
    first, last = slice(None, k), slice(-k, None)
    summary = {
        "first_score": history[0]["objective/score"],
        "last_score": history[-1]["objective/score"],
        "first_score_mean3": mean_of(history, "objective/score", first),
        "last_score_mean3": mean_of(history, "objective/score", last),
        "kl_last_mean3": mean_of(history, "objective/kl", last),
        "clipfrac_mean": mean_of(history, "policy/clipfrac", slice(None)),
        "kl_target": kl_target(OmegaConf.to_container(cfg, resolve=True)),  # None: a fixed β
        "updates": len(history),
        "episodes": len(history) * cfg.rollout.batch_size,
        "sampled_tokens": sum(r.get("perf/sampled_tokens", 0.0) for r in history),
        "wall_time_s": wall_time_s,
        "run_dir": run_dir,
        "processes": processes,
        "policy_dir": os.path.join(run_dir, "policy") if cfg.trainer.save_policy else None,
        "report_png": None,  # not "report": the wandb logger logs the figure under that name
    }
    if replica_diff is not None and processes > 1:
        summary["replica_max_abs_diff"] = replica_diff  # 0.0: every process holds the same policy
    summary["stored_bytes"] = stored
    if rank == 0:
        if cfg.trainer.save_policy:
            extra = {"state_dict": full_state} if full_state is not None else {}
            atomic_save_dir(
                summary["policy_dir"], lambda d: run.policy.save_pretrained(d, run.parts.tokenizer, **extra)
            )
        summary["report_png"] = write_rl_report_quietly(run_dir, cfg)  # before the loggers' end (wandb logs it)
        atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
        registry.manager.hook.textrl_on_stage_end(summary=summary)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return summary
