"""Rollout collection: drive the vector env with the policy under ``no_grad``, one loop for
single-turn and multi-turn episodes.

One call of :meth:`RolloutCollector.collect` resets all N env slots together, prefills the
policy's KV cache once, then alternates "draw a token per slot" (the decode engine, see
:mod:`textrl.rollout.engines`) / ``env.step`` until every episode has ended (the one loop,
:func:`~textrl.rollout.loop.play`, which feeds env tokens by ragged extends); one teacher-forced
pass of the reference model then gives log π_ref. This is the same work as ``model.generate`` plus
the env's bookkeeping (see ``tests/benchmarks/rollout.py``).

The collector uses only the env's public contract: the prompts from ``reset``'s info, the
``terminated``/``truncated`` flags, the step rewards and, on the steps where something ended, the
``info`` columns (``response``, ``score``, ``reward/<component>``, ``reward_details``,
``env_tokens`` with their ``_key`` masks); the final observation's ``action_mask`` says which
tokens were actions. Per token step it keeps the draws (and, on steps with an ``info``, the
rewards) in Python lists; once per batch it places them: a slot's k-th draw, and the reward of the
step that draw was taken on, belong to the column of its k-th action.
"""

from __future__ import annotations

import torch
from gymnasium.vector import AutoresetMode

from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies.policy import PolicyWithValueHead
from textrl.policies.sampling import SamplingConfig
from textrl.policies.scoring import teacher_forced_logprobs
from textrl.config.schema import BranchConfig
from textrl.precision import autocast_dtype
from textrl.rollout.branching import Brancher
from textrl.rollout.buffer import RolloutBatch
from textrl.rollout.engines import make_engine, resolve_engine
from textrl.rollout.loop import Episodes, play


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
        branching: ``algo.branch`` of an algorithm that needs Monte Carlo estimates at chosen
            states (:mod:`textrl.rollout.branching`; the batch's ``branches``), else ``None``.

    Attributes:
        lockstep: ``None``, or (a sharded policy gathered layer by layer,
            ``trainer.rollout_gather=per_layer``) a :class:`textrl.sharding.Lockstep` that keeps
            the processes' forward passes in step: it wraps each engine, and after the decoding
            loop ``lockstep.finish(tokens)`` runs until every process has finished decoding.

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
        branching: BranchConfig | None = None,
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
        self.lockstep = None  # set by a sharded run under trainer.rollout_gather=per_layer
        self._engines: dict = {}  # autocast dtype (None: off) -> engine
        self.generator = torch.Generator(device=env.device).manual_seed(seed)
        self._reset_seed: int | None = seed
        self.brancher = None
        if branching is not None:  # its own stream: the main rollout draws what it would without branches
            self.brancher = Brancher(branching, tokenizer=env.tokenizer, seed=seed + 1, engine_name=self.engine_name)

    def state_dict(self) -> dict:
        """RNG states of token sampling and prompt draws (the env's), for checkpoints: restoring
        them makes the next batch the one an uninterrupted run would get."""
        return {
            "generator": self.generator.get_state(),
            "reset_seed": self._reset_seed,
            "env": self.env.state_dict(),
            "device": self.env.device.type,
            "brancher": self.brancher.state_dict() if self.brancher is not None else None,
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
        if self.brancher is not None and state.get("brancher"):
            self.brancher.load_state_dict(state["brancher"], self.env.device)

    @torch.no_grad()
    def collect(self, prompts: list[str] | None = None) -> RolloutBatch:
        """Run one episode in every env slot and return them as a batch (see the module docstring).

        Args:
            prompts: optional list of ``env.num_envs`` prompts; default: the env draws them.

        Raises:
            TextRLError: a failed compile under ``rollout.engine=compiled``, or a prompt too wide
                for the compiled engine's static cache.
        """
        env, P, n = self.env, self.env.max_prompt_tokens, self.env.num_envs
        vocab, steps = int(env.single_action_space.n), env.width - P
        options = {"prompts": prompts} if prompts is not None else {"group_size": self.samples_per_prompt}
        obs, info = env.reset(seed=self._reset_seed, options=options)
        self._reset_seed = None  # later batches continue the env's prompt RNG
        episodes = Episodes(list(info["prompt"]))
        # room for a multi-turn episode's ragged blocks, whose masked columns fill the static cache too
        self.engine = self._engine(vocab, n, env.width + (steps if env.rules.appends_tokens else 0))
        draw = self.engine.start(obs["input_ids"][:, :P], obs["attention_mask"][:, :P])
        branches = self.brancher.start(n, env.width - P) if self.brancher is not None else None
        obs, draws, rewards = play(env, self.engine, draw, episodes, on_step=self.brancher)
        if self.lockstep is not None:  # forward passes until every process has finished decoding
            self.lockstep.finish(draws[-1].tokens)
        return self._batch(obs, draws, rewards, episodes, vocab, branches)

    def _engine(self, vocab: int, n: int, max_len: int):
        if getattr(self.engine, "failure", None) is not None and self.fallback:
            self.engine_name = "eager"  # a compile failed: eager engines from now on (warned once)
            self._engines.clear()
        precision = autocast_dtype(self.env.device)
        if precision not in self._engines:
            engine = make_engine(
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
            self._engines[precision] = engine if self.lockstep is None else self.lockstep.wrap(engine)
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
        ``[left-padded prompt | tokens after it]`` without the columns no episode used: ``(B, W+T)``
        long copies (the env reuses its buffers at the next reset) and ``(B,)`` episode lengths
        (tokens after the prompt, policy and env)."""
        P = self.env.max_prompt_tokens
        lengths = obs["attention_mask"][:, P:].sum(1)
        prompt_width = int(obs["attention_mask"][:, :P].sum(1).max())
        cols = slice(P - prompt_width, P + int(lengths.max()))
        return obs["input_ids"][:, cols].clone(), obs["attention_mask"][:, cols].long(), lengths

    def episode_fields(self, episodes: Episodes, vocab: int) -> dict:
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

    def _batch(self, obs, draws: list, rewards: dict, episodes: Episodes, vocab: int, branches) -> RolloutBatch:
        input_ids, attention_mask, lengths = self.final_layout(obs)
        P, T = self.env.max_prompt_tokens, int(lengths.max())  # trim columns no episode used
        action_mask = obs["action_mask"][:, P : P + T].float()
        step_rewards = torch.zeros(len(draws[0].tokens), len(draws), device=self.env.device)
        for step, reward in rewards.items():
            step_rewards[:, step] = reward
        # a slot's k-th draw (and its step's reward) go to the column of its k-th action; the draws
        # taken after its episode ended land on non-action columns and are masked away
        columns = torch.argsort((action_mask <= 0).to(torch.int8), dim=1, stable=True)[:, : len(draws)]
        placed = {
            name: torch.zeros_like(action_mask).scatter_(1, columns, torch.cat([getattr(d, name) for d in draws], 1))
            * action_mask
            for name in ("logprobs", "untruncated_logprobs", "values")
        }
        ref_logprobs = self.reference_logprobs(
            input_ids, attention_mask, placed["untruncated_logprobs"], action_mask, vocab
        )
        return RolloutBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            action_mask=action_mask,
            rewards=torch.zeros_like(action_mask).scatter_(1, columns, step_rewards) * action_mask,
            ref_logprobs=ref_logprobs,
            **placed,
            **self.episode_fields(episodes, vocab),
            branches=self.brancher.estimates(columns, action_mask) if branches is not None else None,
        )
