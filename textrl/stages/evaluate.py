"""Stage ``eval``: the trained policy against its reference on held-out prompts.

Both models answer the same prompts (``data.eval_prompts`` held out from RL, or the first
``eval.num_prompts``), sampled with ``rollout.*``; the reward model (``reward.*``) scores every
response. Reported: mean reward of each, the policy's win rate under the reward model (ties count
half), the mean KL of the policy to the reference on its own samples (k1, nats per response, from the
temperature-scaled untruncated log-probs of both, whatever top-k/top-p sampled), and
mean response lengths (tokens). Printed as a table, written to ``eval.json`` and
``eval_samples.jsonl``.
"""

from __future__ import annotations

import os

import torch

from textrl.algorithms.kl import episode_kl
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.io import append_jsonl, atomic_write_json
from textrl.policies.hf_causal_lm import PolicyWithValueHead, load_causal_lm, load_tokenizer
from textrl.policies.sampling import SamplingConfig
from textrl.rollout.collector import RolloutCollector
from textrl.stages.rl import build_reward, load_prompt_split, prompt_formatter


def evaluate(cfg, registry, run_dir: str, device: torch.device) -> dict:
    """Run the evaluation; returns the ``eval.json`` dict."""
    tokenizer = load_tokenizer(cfg.policy.model, cfg.policy.gguf_file)
    policy = PolicyWithValueHead.from_pretrained(cfg.policy.model, cfg.policy.gguf_file, cfg.policy.dtype,
                                                 tokenizer=tokenizer, device=device).eval()
    reference_lm = load_causal_lm(cfg.eval.reference, cfg.eval.reference_gguf_file, cfg.policy.dtype,
                                  tokenizer=tokenizer, device=device).eval()
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
        "policy": {"mean_reward": float(ours.scores.mean()), "mean_length": float(ours.response_mask.sum(1).mean())},
        "reference": {"mean_reward": float(theirs.scores.mean()),
                      "mean_length": float(theirs.response_mask.sum(1).mean())},
        "win_rate": float(wins.mean()),
        "kl": float(episode_kl(ours.kl_logprobs, ours.ref_logprobs, ours.response_mask).mean()),
        "policy_model": cfg.policy.model, "reference_model": cfg.eval.reference,
    }
    atomic_write_json(os.path.join(run_dir, "eval.json"), result)
    samples_path = os.path.join(run_dir, "eval_samples.jsonl")
    for i in range(min(cfg.eval.samples, len(prompts))):
        append_jsonl(samples_path, {"prompt": prompts[i], "policy": ours.responses[i], "policy_reward": float(ours.scores[i]),
                                    "reference": theirs.responses[i], "reference_reward": float(theirs.scores[i])})
    print(format_table(result))
    return result


def format_table(result: dict) -> str:
    """The eval result as a small Markdown table."""
    p, r = result["policy"], result["reference"]
    return "\n".join([
        f"| {result['prompts']} held-out prompts | policy | reference |",
        "| --- | --- | --- |",
        f"| mean reward | {p['mean_reward']:.3f} | {r['mean_reward']:.3f} |",
        f"| mean length (tokens) | {p['mean_length']:.1f} | {r['mean_length']:.1f} |",
        f"| win rate vs reference | {result['win_rate']:.3f} | — |",
        f"| KL(policy ‖ reference), nats | {result['kl']:.3f} | 0 |",
    ])
