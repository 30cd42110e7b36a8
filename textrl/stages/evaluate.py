"""Stage ``eval``: the trained policy against its reference on held-out prompts.

Both models answer the same prompts (``eval.num_prompts`` of them: drawn at random, seeded, from
``eval.prompts`` when set, e.g. IMDB's test reviews; else ``data.eval_prompts`` held out from RL,
or the first of ``data.prompts``), sampled with ``rollout.*``; the reward model (``reward.*``)
scores every response. Reported: mean and median reward of each, the policy's win rate under the
reward model (ties count half), the mean KL of the policy to the reference on its own samples
(nats per response), and mean response lengths (tokens). Printed as a table, written to
``eval.json``, ``eval_samples.jsonl`` (``eval.samples`` examples), ``eval_rewards.jsonl`` (both
rewards of every prompt) and drawn as before/after histograms in ``eval_report.png``.
"""

from __future__ import annotations

import json
import os

import torch

from textrl.envs.prompts import load_prompts
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.io import append_jsonl, atomic_write_json, atomic_write_text
from textrl.policies.hf_causal_lm import PolicyWithValueHead, load_causal_lm, load_tokenizer
from textrl.policies.sampling import SamplingConfig
from textrl.report import EVAL_REWARDS, write_eval_report
from textrl.rollout.collector import RolloutCollector
from textrl.stages.rl import build_reward, load_prompt_split, prompt_formatter


def evaluate(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run the evaluation; returns the ``eval.json`` dict."""
    tokenizer = load_tokenizer(cfg.policy.model, cfg.policy.gguf_file)
    policy = PolicyWithValueHead.from_pretrained(cfg.policy.model, cfg.policy.gguf_file, cfg.policy.dtype,
                                                 tokenizer=tokenizer, device=device).eval()
    reference_lm = load_causal_lm(cfg.eval.reference, cfg.eval.reference_gguf_file, cfg.policy.dtype,
                                  tokenizer=tokenizer, device=device).eval()
    if cfg.eval.prompts:
        d = cfg.data
        prompts = load_prompts(cfg.eval.prompts, text_field=d.text_field, split=d.split, sample=cfg.eval.num_prompts,
                               prefix_tokens=d.prefix_tokens, tokenizer=tokenizer, seed=cfg.seed)
    else:
        train_prompts, held_out = load_prompt_split(cfg, tokenizer)
        prompts = (held_out or train_prompts)[:cfg.eval.num_prompts]
    reward_model = build_reward(cfg, registry, device)
    sampling = SamplingConfig(cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p)

    def rollout(model, reference):
        env = TokenGenVectorEnv(tokenizer, prompts, reward_model, num_envs=len(prompts),
                                max_new_tokens=cfg.env.max_new_tokens, max_prompt_tokens=cfg.env.max_prompt_tokens,
                                prompt_truncation=cfg.env.prompt_truncation, stop_on_eos=cfg.env.stop_on_eos,
                                device=device, autoreset_mode="disabled",
                                format_prompt=prompt_formatter(cfg, tokenizer))
        return RolloutCollector(env, model, reference, sampling, seed=cfg.seed).collect(prompts=prompts)

    ours = rollout(policy, reference_lm)
    theirs = rollout(PolicyWithValueHead(reference_lm).to(device), None)
    wins = (ours.scores > theirs.scores).float() + 0.5 * (ours.scores == theirs.scores).float()
    result = {
        "prompts": len(prompts),
        "policy": {"mean_reward": float(ours.scores.mean()), "median_reward": median(ours.scores),
                   "mean_length": float(ours.response_mask.sum(1).mean())},
        "reference": {"mean_reward": float(theirs.scores.mean()), "median_reward": median(theirs.scores),
                      "mean_length": float(theirs.response_mask.sum(1).mean())},
        "win_rate": float(wins.mean()),
        "kl": float(((ours.logprobs - ours.ref_logprobs) * ours.response_mask).sum(1).mean()),
        "policy_model": cfg.policy.model, "reference_model": cfg.eval.reference,
    }
    atomic_write_json(os.path.join(run_dir, "eval.json"), result)
    samples_path = os.path.join(run_dir, "eval_samples.jsonl")
    for i in range(min(cfg.eval.samples, len(prompts))):
        append_jsonl(samples_path, {"prompt": prompts[i], "policy": ours.responses[i], "policy_reward": float(ours.scores[i]),
                                    "reference": theirs.responses[i], "reference_reward": float(theirs.scores[i])})
    atomic_write_text(os.path.join(run_dir, EVAL_REWARDS), "".join(
        json.dumps({"prompt": p, "policy_reward": float(a), "reference_reward": float(b)}, allow_nan=False) + "\n"
        for p, a, b in zip(prompts, ours.scores.tolist(), theirs.scores.tolist())))
    figure = write_eval_report(run_dir)
    if cfg.logger.name == "wandb":
        from textrl.loggers.wandb import log_figures

        log_figures(cfg, run_dir, {"eval/reward_histogram": figure}, summary=result)
    print(format_table(result))
    return result


def median(scores: torch.Tensor) -> float:
    """The median of ``scores`` (``FloatTensor[N]``, N ≥ 1): the mean of the two middle values
    when N is even (numpy's convention; ``torch.median`` would return the lower one)."""
    values = scores.detach().double().cpu().sort().values
    n = len(values)
    return float((values[(n - 1) // 2] + values[n // 2]) / 2)


def format_table(result: dict) -> str:
    """The eval result as a small Markdown table."""
    p, r = result["policy"], result["reference"]
    return "\n".join([
        f"| {result['prompts']} held-out prompts | policy | reference |",
        "| --- | --- | --- |",
        f"| mean reward | {p['mean_reward']:.3f} | {r['mean_reward']:.3f} |",
        f"| median reward | {p['median_reward']:.3f} | {r['median_reward']:.3f} |",
        f"| mean length (tokens) | {p['mean_length']:.1f} | {r['mean_length']:.1f} |",
        f"| win rate vs reference | {result['win_rate']:.3f} | — |",
        f"| KL(policy ‖ reference), nats | {result['kl']:.3f} | 0 |",
    ])
