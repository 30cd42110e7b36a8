"""Stage ``rl``: PPO (or any algorithm plugin) against a reward model, the InstructGPT RL stage.

Per update: collect ``rollout.batch_size`` episodes through the vector env, run the algorithm's
update, call the ``textrl_on_update_end`` hooks (metrics.jsonl, samples.jsonl, console, wandb).
At the end the policy is saved to ``<run_dir>/policy`` and ``summary.json`` is written, both
atomically.
"""

from __future__ import annotations

import inspect
import os
import time

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from textrl.config import build_plugin
from textrl.errors import TextRLError
from textrl.records import format_prompt
from textrl.envs.prompts import load_prompts
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.io import atomic_save_dir, atomic_write_json
from textrl.loggers import JsonlLogger, make_logger
from textrl.policies.hf_causal_lm import PolicyWithValueHead, load_tokenizer
from textrl.policies.reference import frozen_reference
from textrl.policies.sampling import SamplingConfig
from textrl.rollout.collector import RolloutCollector


def load_prompt_split(cfg, tokenizer) -> tuple[list[str], list[str]]:
    """``(train_prompts, eval_prompts)``: ``data.eval_prompts`` holds out the last k prompts for
    ``stage=eval``. Prompts are raw text; :func:`prompt_formatter` writes them for the policy.

    Raises:
        TextRLError: holding out every prompt.
    """
    d = cfg.data
    prompts = load_prompts(d.prompts, text_field=d.text_field, split=d.split, max_prompts=d.max_prompts,
                           prefix_tokens=d.prefix_tokens, tokenizer=tokenizer)
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


def train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run the RL stage; returns the summary dict (also written to ``summary.json``).

    The jsonl logger (metrics.jsonl, samples.jsonl in ``run_dir``) and the ``logger.name``
    logger are registered as plugins for the duration of the stage.
    """
    names = [registry.manager.register(p) for p in (JsonlLogger(run_dir), make_logger(cfg.logger)) if p is not None]
    try:
        return _train(cfg, registry, run_dir, device)
    finally:
        for name in names:
            registry.manager.unregister(name=name)


def _train(cfg, registry, run_dir: str, device: torch.device) -> dict:
    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg.policy.model, cfg.policy.gguf_file)
    policy = PolicyWithValueHead.from_pretrained(cfg.policy.model, cfg.policy.gguf_file, cfg.policy.dtype,
                                                 tokenizer=tokenizer, dropout=cfg.policy.dropout, device=device)
    reference = frozen_reference(policy)
    prompts, _ = load_prompt_split(cfg, tokenizer)
    reward_model = build_reward(cfg, registry, device)
    env = TokenGenVectorEnv(tokenizer, prompts, reward_model, num_envs=cfg.rollout.batch_size,
                            max_new_tokens=cfg.env.max_new_tokens, max_prompt_tokens=cfg.env.max_prompt_tokens,
                            prompt_truncation=cfg.env.prompt_truncation, stop_on_eos=cfg.env.stop_on_eos,
                            device=device, autoreset_mode="disabled", format_prompt=prompt_formatter(cfg, tokenizer))
    sampling = SamplingConfig(cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p)
    algorithm = build_plugin("algo", OmegaConf.to_container(cfg.algo, resolve=True), registry.algorithms)
    offered = {"reward_model": reward_model, "tokenizer": tokenizer}  # passed to setups that accept them
    accepted = inspect.signature(algorithm.setup).parameters
    algorithm.setup(policy, reference, **{k: v for k, v in offered.items() if k in accepted})
    samples_per_prompt = getattr(algorithm, "samples_per_prompt", None) or cfg.rollout.samples_per_prompt
    collector = RolloutCollector(env, policy, reference, sampling, seed=cfg.seed, samples_per_prompt=samples_per_prompt)

    hook = registry.manager.hook
    hook.textrl_on_train_start(cfg=cfg, run_dir=run_dir)
    scores = []
    bar = tqdm(range(1, cfg.trainer.updates + 1), desc="updates", disable=not cfg.trainer.progress_bar,
               dynamic_ncols=True)
    for update in bar:
        t0 = time.perf_counter()
        batch = collector.collect()
        t1 = time.perf_counter()
        metrics = algorithm.update(batch)
        t2 = time.perf_counter()
        tokens = float(batch.response_mask.sum())
        metrics.update({"perf/tokens_per_s": tokens / (t2 - t0), "perf/rollout_s": t1 - t0, "perf/update_s": t2 - t1})
        scores.append(float(batch.scores.mean()))
        samples = []
        if cfg.trainer.sample_every and update % cfg.trainer.sample_every == 0:
            samples = [{"prompt": p, "response": r, "score": float(s)} for p, r, s in
                       zip(batch.prompts, batch.responses, batch.scores[:cfg.trainer.samples_per_update])]
        hook.textrl_on_update_end(update=update, metrics=metrics, samples=samples)
        bar.set_postfix(score=f"{scores[-1]:.3f}", kl=f"{metrics.get('objective/kl', 0.0):.2f}")
    bar.close()

    if cfg.trainer.save_policy:
        atomic_save_dir(os.path.join(run_dir, "policy"), lambda d: policy.save_pretrained(d, tokenizer))
    k = max(1, min(3, len(scores) // 3))
    summary = {
        "first_score": scores[0], "last_score": scores[-1],
        "first_score_mean3": sum(scores[:k]) / k, "last_score_mean3": sum(scores[-k:]) / k,
        "updates": len(scores), "episodes": len(scores) * cfg.rollout.batch_size,
        "wall_time_s": time.perf_counter() - start, "run_dir": run_dir,
    }
    atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    hook.textrl_on_train_end(summary=summary)
    return summary
