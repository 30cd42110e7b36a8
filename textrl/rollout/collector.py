"""Rollout collection: drive the vector env with the policy under ``no_grad``.

One call of :meth:`RolloutCollector.collect` resets all N env slots together, prefills the
policy's KV cache once, then alternates "draw a token per slot" (the decode engine, see
:mod:`textrl.rollout.engines`) / ``env.step`` until every episode has ended; one teacher-forced
pass of the reference model then gives log π_ref. This is the same work as ``model.generate`` plus
the env's bookkeeping (see ``tests/benchmarks/rollout.py``).

The collector uses only the env's public contract: the prompts from ``reset``'s info, the
``terminated``/``truncated`` flags and, on the steps where episodes end, the ``info`` columns
(``response``, ``score``, ``reward/<component>``, ``reward_details`` with their ``_key`` masks).
Each episode's score is read once from that info (the env pays it on the episode's last step;
the algorithms shape per-token rewards from it). The response lengths are the response part of the final observation's
attention mask. Per token step it keeps the draws in Python lists and stacks them once per batch.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.sampling import SamplingConfig
from textrl.policies.scoring import teacher_forced_logprobs
from textrl.rollout.buffer import RolloutBatch
from textrl.rollout.engines import make_engine, resolve_engine
from textrl.rollout.precision import autocast_dtype


class RolloutCollector:
    """Collect :class:`RolloutBatch` es of ``env.num_envs`` episodes.

    Args:
        env: a :class:`TokenGenVectorEnv` in ``DISABLED`` autoreset mode, on the policy's device.
        policy: the policy with value head.
        reference: the frozen π_ref LM (``None``: no KL term; ref logprobs = logprobs).
        sampling: temperature / top-k / top-p for the policy.
        seed: seeds the env's prompt draws (first reset) and the token-sampling generator, so
            the same seed and config give the same first rollout token for token.
        samples_per_prompt: k > 1 has the env draw ``num_envs / k`` prompts per batch
            (``reset(options={"group_size": k})``) and run each in k consecutive slots, for
            group baselines (GRPO, RLOO).
        engine: ``rollout.engine``: ``eager``, ``compiled`` or ``auto`` (see
            :mod:`textrl.rollout.engines`). An engine (with its static cache and compiled step) is
            made at the first batch collected in a given autocast state (dtype or off) and reused
            by every later batch in that state, so a change of precision between batches gets an
            engine of its own instead of a cache of the wrong dtype. With ``auto``, a compiled
            engine whose compile fails warns once and the collector makes eager engines from then on.
        compile_backend: ``torch.compile`` backend of the compiled engine (default: inductor).
        chunk_size: rows per teacher-forced π_ref pass (``algo.micro_batch_size``; ``None`` =
            the whole batch in one pass).

    Raises:
        TextRLError: the env autoresets (its episodes would be cut into the next batch), k does
            not divide ``num_envs``, or an unknown engine.
    """

    def __init__(
        self,
        env: TokenGenVectorEnv,
        policy: PolicyWithValueHead,
        reference,
        sampling: SamplingConfig,
        seed: int = 0,
        samples_per_prompt: int = 1,
        engine: str = "eager",
        compile_backend: str | None = None,
        chunk_size: int | None = None,
    ):
        if env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
            raise TextRLError(
                f"RolloutCollector needs autoreset_mode=DISABLED; got {env.metadata.get('autoreset_mode')}"
            )
        if samples_per_prompt < 1 or env.num_envs % samples_per_prompt:
            raise TextRLError(
                f"rollout.samples_per_prompt: got {samples_per_prompt}; expected a divisor of "
                f"rollout.batch_size={env.num_envs}"
            )
        self.env, self.policy, self.reference, self.sampling = env, policy, reference, sampling
        self.seed, self.samples_per_prompt, self.chunk_size = seed, samples_per_prompt, chunk_size
        self.engine_name = resolve_engine(engine, env.device)
        self.fallback = engine == "auto"
        self.compile_backend = compile_backend
        self.engine = None  # the engine of the latest batch
        self._engines: dict = {}  # autocast dtype (None: off) -> engine
        self.generator = torch.Generator(device=env.device).manual_seed(seed)
        self._reset_seed: int | None = seed

    def state_dict(self) -> dict:
        """RNG states of token sampling and prompt draws (the env's), for checkpoints: restoring
        them makes the next batch the one an uninterrupted run would get."""
        return {
            "generator": self.generator.get_state(),
            "reset_seed": self._reset_seed,
            "env": self.env.state_dict(),
            "device": self.env.device.type,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            TextRLError: a state saved on another kind of device (a CUDA generator's state does not
                fit a CPU generator).
        """
        if state.get("device", self.env.device.type) != self.env.device.type:
            raise TextRLError(
                f"trainer.resume: checkpoint was written on {state['device']}; expected a run on the "
                f"same kind of device (this one is {self.env.device.type}; set device=...)"
            )
        self.generator.set_state(state["generator"])
        self._reset_seed = state["reset_seed"]
        env_state = dict(state["env"])
        if "prompt_rng" in state:  # checkpoints written before the env drew grouped prompts itself
            env_state.setdefault("group_rng", state["prompt_rng"])
        self.env.load_state_dict(env_state)

    @torch.no_grad()
    def collect(self, prompts: list[str] | None = None) -> RolloutBatch:
        """Run one episode in every env slot and return them as a batch.

        Args:
            prompts: optional list of ``env.num_envs`` prompts; default: the env draws them.
        """
        if getattr(self.env, "interaction", None) is not None:  # multi-turn: see textrl.rollout.multiturn
            from textrl.rollout.multiturn import collect_multiturn

            return collect_multiturn(self, prompts)
        env, P, n, T = self.env, self.env.max_prompt_tokens, self.env.num_envs, self.env.max_new_tokens
        vocab = int(env.single_action_space.n)
        options = {"prompts": prompts} if prompts is not None else {"group_size": self.samples_per_prompt}
        obs, info = env.reset(seed=self._reset_seed, options=options)
        self._reset_seed = None  # later batches continue the env's prompt RNG
        episodes = Episodes(list(info["prompt"]))
        self.engine = self._engine(vocab, n, P + T)
        draw = self.engine.start(obs["input_ids"][:, :P], obs["attention_mask"][:, :P])
        draws, active = [], torch.ones(n, 1, dtype=torch.bool, device=env.device)
        for _ in range(T):
            draws.append(draw)
            obs, _, terminated, truncated, info = env.step(draw.tokens)
            if info:  # some episodes ended on this step: the one place their results arrive
                active = active & ~(terminated | truncated)[:, None]
                if episodes.record(info):
                    break
            draw = self.engine.advance(draw.tokens, active)
        return self._batch(obs, draws, episodes, vocab)

    def _engine(self, vocab: int, n: int, max_len: int):
        if getattr(self.engine, "failure", None) is not None and self.fallback:
            self.engine_name = "eager"  # a compile failed: eager engines from now on (warned once)
            self._engines.clear()
        precision = autocast_dtype(self.env.device)
        if precision not in self._engines:
            self._engines[precision] = make_engine(
                self.engine_name,
                self.policy,
                self.sampling,
                vocab,
                self.generator,
                n,
                max_len,
                self.compile_backend,
                fallback=self.fallback,
            )
        return self._engines[precision]

    def reference_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        untruncated_logprobs: torch.Tensor,
        mask: torch.Tensor,
        vocab: int,
    ) -> torch.Tensor:
        """``(B, T)`` float32 log π_ref of the last T tokens of ``input_ids`` (``(B, P+T)``) under the
        temperature-scaled untruncated distribution, teacher-forced in chunks of ``chunk_size``
        rows and zeroed where ``mask`` (``(B, T)``) is 0; without a reference model, a copy of the
        policy's ``untruncated_logprobs`` (so the KL is 0)."""
        if self.reference is None:
            return untruncated_logprobs.clone()
        return (
            teacher_forced_logprobs(
                self.reference,
                input_ids,
                attention_mask,
                mask.shape[1],
                vocab,
                self.sampling.untruncated(),
                self.chunk_size,
            )
            * mask
        )

    def final_layout(self, obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, lengths)`` of the final observation ``obs``, cut to
        ``[left-padded prompt | responses]`` without the columns no episode used: ``(B, W+T)``
        long copies (the env reuses its buffers at the next reset) and ``(B,)`` response lengths."""
        P = self.env.max_prompt_tokens
        lengths = obs["attention_mask"][:, P:].sum(1)
        prompt_width = int(obs["attention_mask"][:, :P].sum(1).max())
        cols = slice(P - prompt_width, P + int(lengths.max()))
        return obs["input_ids"][:, cols].clone(), obs["attention_mask"][:, cols].long(), lengths

    def episode_fields(self, episodes: "Episodes", vocab: int) -> dict:
        """The :class:`RolloutBatch` fields that come from the episodes' results and the collector's
        settings (scores, texts, reward components and details, sampling, vocabulary, k)."""
        device = self.env.device
        return dict(
            scores=torch.as_tensor(episodes.scores, device=device),
            prompts=episodes.prompts,
            responses=episodes.responses,
            sampling=self.sampling,
            vocab_size=vocab,
            samples_per_prompt=self.samples_per_prompt,
            reward_components={k: torch.as_tensor(v, device=device) for k, v in episodes.components.items()},
            reward_details=episodes.details if any(d is not None for d in episodes.details) else None,
        )

    def _batch(self, obs, draws: list, episodes: "Episodes", vocab: int) -> RolloutBatch:
        input_ids, attention_mask, lengths = self.final_layout(obs)
        T = int(lengths.max())  # trim columns no episode used
        response_mask = (torch.arange(T, device=self.env.device)[None, :] < lengths[:, None]).float()
        logprobs, untruncated_logprobs, values = (
            torch.cat([getattr(d, name) for d in draws[:T]], 1) * response_mask
            for name in ("logprobs", "untruncated_logprobs", "values")
        )
        ref_logprobs = self.reference_logprobs(input_ids, attention_mask, untruncated_logprobs, response_mask, vocab)
        return RolloutBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            response_mask=response_mask,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            untruncated_logprobs=untruncated_logprobs,
            values=values,
            **self.episode_fields(episodes, vocab),
        )


class Episodes:
    """The per-episode results of one batch, gathered from the env's step ``info`` (host side).

    Args:
        prompts: the N prompts, from ``reset``'s ``info["prompt"]``.

    ``record(info)`` copies the rows flagged in the info's ``_score`` mask: ``response`` (str),
    ``score`` (float32), each ``reward/<component>`` (float32) and ``reward_details`` (dict or
    ``None``), and returns whether every episode has now ended.
    """

    def __init__(self, prompts: list[str]):
        n = len(prompts)
        self.prompts = prompts
        self.responses: list[str] = [""] * n
        self.scores = np.zeros(n, dtype=np.float32)
        self.components: dict[str, np.ndarray] = {}
        self.details: list[dict | None] = [None] * n
        self.remaining = n

    def record(self, info: dict) -> bool:
        """Copy the rows of the episodes ``info`` flags as ended; ``True`` once every episode has."""
        ended = info["_score"]
        self.scores[ended] = info["score"][ended]
        for i in np.flatnonzero(ended):
            self.responses[i] = info["response"][i]
            if "reward_details" in info:
                self.details[i] = info["reward_details"][i]
        for key, values in info.items():
            if key.startswith("reward/"):
                self.components.setdefault(key[len("reward/") :], np.zeros(len(self.prompts), np.float32))[ended] = (
                    values[ended]
                )
        self.remaining -= int(ended.sum())
        return self.remaining == 0
