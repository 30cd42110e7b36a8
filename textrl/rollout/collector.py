"""Rollout collection: drive the vector env with the policy under ``no_grad``.

One call of :meth:`RolloutCollector.collect` resets all N env slots together, prefills the
policy's KV cache once, then alternates "sample a token per slot" / ``env.step`` until every
episode has ended; one teacher-forced pass of the reference model then gives log π_ref. This is
the same work as ``model.generate`` plus the env's bookkeeping (see ``tests/benchmarks``).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies.hf_causal_lm import PolicyWithValueHead, response_logits
from textrl.policies.kv_cache import KVCacheDecoder
from textrl.policies.sampling import SamplingConfig, sample_tokens, token_logprobs
from textrl.rollout.buffer import RolloutBatch


class RolloutCollector:
    """Collect :class:`RolloutBatch` es of ``env.num_envs`` episodes.

    Args:
        env: a :class:`TokenGenVectorEnv` in ``DISABLED`` autoreset mode, on the policy's device.
        policy: the policy with value head.
        reference: the frozen π_ref LM (``None``: no KL term; ref logprobs = logprobs).
        sampling: temperature / top-k / top-p for the policy.
        seed: seeds the env's prompt draws (first reset) and the token-sampling generator, so
            the same seed and config give the same first rollout token for token.
        samples_per_prompt: k > 1 draws ``num_envs / k`` prompts per batch (with the
            collector's own seeded generator) and runs each in k consecutive slots, for
            group baselines (GRPO, RLOO).

    Raises:
        TextRLError: the env autoresets (its episodes would be cut into the next batch), or
            k does not divide ``num_envs``.
    """

    def __init__(self, env: TokenGenVectorEnv, policy: PolicyWithValueHead, reference, sampling: SamplingConfig,
                 seed: int = 0, samples_per_prompt: int = 1):
        if env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
            raise TextRLError(f"RolloutCollector needs autoreset_mode=DISABLED; got {env.metadata.get('autoreset_mode')}")
        if samples_per_prompt < 1 or env.num_envs % samples_per_prompt:
            raise TextRLError(f"rollout.samples_per_prompt: got {samples_per_prompt}; expected a divisor of "
                              f"rollout.batch_size={env.num_envs}")
        self.env, self.policy, self.reference, self.sampling = env, policy, reference, sampling
        self.seed, self.samples_per_prompt = seed, samples_per_prompt
        self.prompt_rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=env.device).manual_seed(seed)
        self._reset_seed: int | None = seed

    def state_dict(self) -> dict:
        """RNG states of token sampling and prompt draws (the collector's and the env's), for
        checkpoints: restoring them makes the next batch the one an uninterrupted run would get."""
        return {"generator": self.generator.get_state(), "prompt_rng": self.prompt_rng.bit_generator.state,
                "reset_seed": self._reset_seed, "env": self.env.state_dict(), "device": self.env.device.type}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            TextRLError: a state saved on another kind of device (a CUDA generator's state does not
                fit a CPU generator).
        """
        if state.get("device", self.env.device.type) != self.env.device.type:
            raise TextRLError(f"trainer.resume: checkpoint was written on {state['device']}; expected a run on the "
                              f"same kind of device (this one is {self.env.device.type}; set device=...)")
        self.generator.set_state(state["generator"])
        self.prompt_rng.bit_generator.state = state["prompt_rng"]
        self._reset_seed = state["reset_seed"]
        self.env.load_state_dict(state["env"])

    @torch.no_grad()
    def collect(self, prompts: list[str] | None = None) -> RolloutBatch:
        """Run one episode in every env slot and return them as a batch.

        Args:
            prompts: optional list of ``env.num_envs`` prompts; default: the env draws them.
        """
        env, P, T = self.env, self.env.max_prompt_tokens, self.env.max_new_tokens
        k = self.samples_per_prompt
        if prompts is None and k > 1:
            picks = self.prompt_rng.choice(len(env.prompts), size=env.num_envs // k,
                                            replace=len(env.prompts) < env.num_envs // k)
            prompts = [env.prompts[i] for i in picks for _ in range(k)]
        obs, _ = env.reset(seed=self._reset_seed, options={"prompts": prompts} if prompts is not None else None)
        self._reset_seed = None  # later batches continue the env's prompt RNG
        n, vocab = env.num_envs, int(env.single_action_space.n)
        decoder = KVCacheDecoder(self.policy)
        logits, values = decoder.prefill(obs["input_ids"][:, :P], obs["attention_mask"][:, :P])
        logprobs = torch.zeros(n, T, device=env.device)
        kl_logprobs = logprobs if not self.sampling.truncates else torch.zeros(n, T, device=env.device)
        value_buf = torch.zeros(n, T, device=env.device)
        rewards = torch.zeros(n, T, device=env.device)
        active = torch.ones(n, dtype=torch.bool, device=env.device)
        for t in range(T):
            tokens, logp, kl_logp = sample_tokens(logits[:, :vocab], self.sampling, self.generator)
            tokens = torch.where(active, tokens, env.pad_token_id)
            logprobs[:, t] = logp  # entries after an episode's end are zeroed once, in _batch
            if kl_logprobs is not logprobs:
                kl_logprobs[:, t] = kl_logp
            value_buf[:, t] = values
            obs, reward, terminated, truncated, _ = env.step(tokens)
            rewards[:, t] = reward
            active = ~env.done
            if env.all_done:
                break
            logits, values = decoder.step(tokens, active)
        return self._batch(obs, logprobs, kl_logprobs, value_buf, rewards, vocab)

    def _batch(self, obs, logprobs, kl_logprobs, values, rewards, vocab: int) -> RolloutBatch:
        env, P = self.env, self.env.max_prompt_tokens
        lengths = env.lengths
        T = int(lengths.max())  # trim columns no episode used
        prompt_width = int(obs["attention_mask"][:, :P].long().sum(1).max())
        cols = slice(P - prompt_width, P + T)
        input_ids = obs["input_ids"][:, cols]
        attention_mask = obs["attention_mask"][:, cols].long()
        response_mask = (torch.arange(T, device=env.device)[None, :] < lengths[:, None]).float()
        kl_logprobs = kl_logprobs[:, :T] * response_mask
        logprobs, values, rewards = logprobs[:, :T] * response_mask, values[:, :T] * response_mask, rewards[:, :T]
        if self.reference is None:
            ref_logprobs = kl_logprobs.clone()
        else:
            ref_logits = response_logits(self.reference, input_ids, attention_mask, T)[..., :vocab]
            ref_logprobs = token_logprobs(ref_logits, input_ids[:, -T:], self.sampling.untruncated()) * response_mask
        return RolloutBatch(
            input_ids=input_ids, attention_mask=attention_mask, response_mask=response_mask,
            logprobs=logprobs, ref_logprobs=ref_logprobs, kl_logprobs=kl_logprobs, values=values, rewards=rewards,
            scores=rewards.sum(1), prompts=list(env.episode_prompts), responses=list(env.episode_responses),
            sampling=self.sampling, vocab_size=vocab, samples_per_prompt=self.samples_per_prompt,
            reward_components={k: v.clone() for k, v in env.episode_components.items()},
            reward_details=list(env.episode_details) if any(d is not None for d in env.episode_details) else None,
        )
