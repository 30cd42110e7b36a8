"""N text-generation episodes stepped together, as torch tensors on the policy's device.

The same MDP as :class:`~textrl.envs.token_env.TokenGenEnv`, batched: one ``step`` appends one
token to every episode, and all episodes that end on that step are scored by one batched reward
call. Observations, rewards and flags are ``torch`` tensors on ``device``, so a policy on a GPU
never copies them to the host; the only host transfer per step is one small tensor of flags
(were any actions out of range, did any episode end), the same "are we done?" check
``model.generate`` makes. Decoding to text happens only for episodes that end.

Seeding follows Gymnasium: ``reset(seed=s)`` seeds slot ``i`` with ``s + i``, so slot ``i``
draws the same prompts as a single env reset with seed ``s + i``.

Autoreset (``metadata["autoreset_mode"]``):

- ``NEXT_STEP`` (Gymnasium's default): the step after an episode ends resets that slot, ignores
  its action and returns the new episode's first observation with reward 0.
- ``DISABLED`` (what :mod:`textrl.rollout` uses): a slot whose episode ended stays as it is,
  its actions are ignored and it returns reward 0 and both flags false until
  ``reset(options={"reset_mask": mask})`` (or a plain ``reset``) starts it again. Its
  observation keeps the finished episode, so a rollout reads every episode from the final obs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium import spaces

from textrl.envs import multiturn
from textrl.envs.prompts import load_prompts
from textrl.envs.token_env import (
    check_lengths,
    decode_response,
    eos_id_of,
    encode_prompt,
    observation_space,
    pad_id_of,
    resolve_tokenizer,
    vocab_size_of,
)
from textrl.errors import TextRLError
from textrl.rewards.base import score_responses

MODES = {m.value.lower(): m for m in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)}


class TokenGenVectorEnv(VectorEnv):
    """``num_envs`` token-generation episodes as one batched torch environment.

    Args:
        tokenizer, prompts, reward_model, max_new_tokens, max_prompt_tokens, prompt_truncation, vocab_size, stop_on_eos: as
            for :class:`~textrl.envs.token_env.TokenGenEnv`.
        num_envs: number of parallel episodes N.
        device: torch device of every returned tensor.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default) or ``AutoresetMode.DISABLED``
            (or their names ``"nextstep"``/``"disabled"``).
        format_prompt: optional ``str -> str`` applied to a prompt before tokenising (e.g. a chat
            template); the reward model and ``info`` still get the raw prompt.
        interaction, max_turns, max_episode_tokens, turn_reward: multi-turn episodes, as for
            :class:`~textrl.envs.token_env.TokenGenEnv` (``info["env_tokens"]``: see
            :func:`textrl.envs.multiturn.vector_step`).

    ``reset(seed=, options=)`` → ``(obs, info)``; ``options`` may hold ``"prompts"`` (a list of
    N strings, or one per slot being reset) and ``"reset_mask"`` (bool ``(N,)``: reset only
    these slots). ``step(actions: LongTensor[N])`` → ``(obs, rewards: FloatTensor[N],
    terminations: BoolTensor[N], truncations: BoolTensor[N], info)``. ``obs`` is
    ``{"input_ids": LongTensor[N, P+T], "attention_mask": Int8Tensor[N, P+T]}``.
    When episodes end, ``info`` holds ``prompt``, ``response`` (object arrays) and ``score``
    (float array), each with its ``_key`` mask, the Gymnasium vector-info convention; a reward
    model with ``score_with_details`` adds ``reward/<component>`` (float arrays) and
    ``reward_details`` (object array of dicts); steps on which no episode ends return ``{}``.
    ``episode_prompts``, ``episode_responses`` and ``episode_details`` hold each slot's
    current prompt and last finished episode's response and explanation.
    ``options["group_size"] = k`` (with no ``"prompts"``) draws ``N / k`` prompts and starts each
    in k consecutive slots (group baselines: GRPO, RLOO), from a generator seeded by
    ``reset(seed=s)`` with ``s``.
    ``copy``: as Gymnasium's ``SyncVectorEnv(copy=...)``: ``True`` returns a fresh copy of the
    observation from every ``reset``/``step``; ``False`` returns views of the env's buffers,
    valid until the next ``reset``, and on steps where nothing ends shared all-zero reward/flag
    tensors (cheaper per step: read them, never write into them; the rollout collector copies
    once per batch). ``step`` also accepts actions shaped ``(N, 1)``.

    Raises:
        TextRLError: as the single env, plus a wrong number of prompts or actions.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        tokenizer,
        prompts: Sequence[str] | str,
        reward_model: Callable[[list[str], list[str]], Any],
        num_envs: int = 1,
        max_new_tokens: int = 32,
        max_prompt_tokens: int = 64,
        prompt_truncation: str = "left",
        vocab_size: int | None = None,
        stop_on_eos: bool = True,
        device: str | torch.device = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        format_prompt: Callable[[str], str] | None = None,
        copy: bool = True,
        interaction=None,
        max_turns: int = 1,
        max_episode_tokens: int | None = None,
        turn_reward: str = "final",
    ):
        check_lengths(max_new_tokens, max_prompt_tokens)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs <= 0:
            raise TextRLError(f"num_envs: got {num_envs!r}; expected a positive integer")
        if isinstance(autoreset_mode, str):
            if autoreset_mode.lower() not in MODES:
                raise TextRLError(f"autoreset_mode: got {autoreset_mode!r}; expected one of {sorted(MODES)}")
            autoreset_mode = MODES[autoreset_mode.lower()]
        if autoreset_mode not in MODES.values():
            raise TextRLError(f"autoreset_mode: got {autoreset_mode}; expected NEXT_STEP or DISABLED")
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.prompts = load_prompts(prompts)
        self.reward_model = reward_model
        self.num_envs = num_envs
        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.prompt_truncation = prompt_truncation
        self.format_prompt = format_prompt
        self.stop_on_eos = stop_on_eos
        self.copy = copy
        self.eos_token_id = eos_id_of(self.tokenizer, stop_on_eos)
        self.pad_token_id = pad_id_of(self.tokenizer)
        self.device = torch.device(device)
        self.width = self.max_prompt_tokens + self.max_new_tokens
        vocab = vocab_size_of(self.tokenizer, vocab_size)
        self.single_action_space = spaces.Discrete(vocab)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = observation_space(vocab, self.width)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.interaction = interaction
        if interaction is not None:  # multi-turn episodes: see textrl.envs.multiturn
            multiturn.setup_env(
                self,
                interaction=interaction,
                max_turns=max_turns,
                max_episode_tokens=max_episode_tokens,
                vocab=vocab,
                turn_reward=turn_reward,
            )
            self._amask = torch.zeros((num_envs, self.width + 1), dtype=torch.int8, device=self.device)
            self._episodes = [None] * num_envs

        n, dev = num_envs, self.device
        # one scratch column past the observation width (see ``step``)
        self._ids = torch.full((n, self.width + 1), self.pad_token_id, dtype=torch.long, device=dev)
        self._mask = torch.zeros((n, self.width + 1), dtype=torch.int8, device=dev)
        self.input_ids, self.attention_mask = self._ids[:, : self.width], self._mask[:, : self.width]
        # per-slot state: episode running, and the observation column its next token goes to (P + length)
        self._active = torch.zeros(n, dtype=torch.bool, device=dev)
        self._next_col = torch.full((n,), self.max_prompt_tokens, dtype=torch.long, device=dev)
        # constants of the step, made once (a Python scalar in torch.where costs an op per step)
        self._two, self._scratch = torch.tensor(2, device=dev), torch.tensor(self.width, device=dev)
        self._one, self._rows = torch.tensor(1, dtype=torch.int8, device=dev), torch.arange(n, device=dev)
        self._no_flags = torch.zeros(n, dtype=torch.bool, device=dev)  # never written: returned as is
        self._no_rewards = torch.zeros(n, dtype=torch.float32, device=dev)  # never written: returned as is
        self.episode_prompts: list[str] = [""] * n
        self.episode_responses: list[str] = [""] * n  # decoded when each episode ends
        self.episode_details: list[dict | None] = [None] * n  # the reward model's explanation, if any
        self._rngs = [seeding.np_random()[0] for _ in range(n)]
        self._group_rng = np.random.default_rng()  # prompt draws for options["group_size"]
        self._prompt_ids: dict[str, list[int]] = {}

    @property
    def done(self) -> torch.Tensor:
        """``BoolTensor[N]``: each slot's episode is over (awaiting a reset)."""
        return ~self._active

    @property
    def lengths(self) -> torch.Tensor:
        """``LongTensor[N]``: response tokens each slot's episode has so far."""
        return self._next_col - self.max_prompt_tokens

    # -- Gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        """Start new episodes in all slots, or in ``options["reset_mask"]``'s slots.

        Returns:
            ``(obs, info)``; ``info["prompt"]`` is an object array of the slots' prompts.
        """
        options = options or {}
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise TextRLError(f"reset(seed=...): got {len(seeds)} seeds; expected {self.num_envs}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            self._group_rng = np.random.default_rng(seeds[0])
        mask = options.get("reset_mask")
        slots = list(range(self.num_envs)) if mask is None else torch.as_tensor(mask).nonzero().flatten().tolist()
        prompts = options.get("prompts")
        if prompts is None and options.get("group_size", 1) != 1:
            prompts = self._group_prompts(options["group_size"], len(slots))
        self._start(slots, prompts)
        return self._obs(), {"prompt": np.array(self.episode_prompts, dtype=object)}

    def step(self, actions):
        """Append one token per active slot; see the class docstring for the returned tuple.

        Device work per step: about a dozen elementwise ops on ``(N,)`` tensors, two indexed
        writes into the observation buffers and one host transfer of a single integer (2: an
        action outside the vocabulary, 1: an episode ended, 0: neither), the same "are we done?"
        check ``model.generate`` makes. Text decoding and the reward model run only on steps where
        episodes end.
        """
        actions = torch.as_tensor(actions, device=self.device)
        if actions.dtype != torch.long:
            actions = actions.long()
        if actions.numel() != self.num_envs:
            raise TextRLError(f"step(actions): got {actions.numel()} actions; expected {self.num_envs}")
        if self.interaction is not None:
            return multiturn.vector_step(self, actions)
        flat = actions if actions.dim() == 1 else actions.reshape(-1)
        active = self._active
        bad = (flat.clamp(0, self.single_action_space.n - 1) != flat) & active
        at_limit = self._next_col >= self.width - 1  # this token is the episode's last allowed one
        if self.eos_token_id is not None:
            eos = flat == self.eos_token_id
            terminated, truncated = active & eos, (at_limit > eos) & active  # a > b is a & ~b for bools
        else:
            terminated, truncated = self._no_flags if not self.copy else torch.zeros_like(active), at_limit & active
        ended = terminated | truncated
        # The one host sync per step: 2 = an action out of range, 1 = an episode ended, 0 = neither.
        was_done = None
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            was_done = ~active
            status, any_was_done = torch.stack([torch.where(bad, self._two, ended).amax(), was_done.any()]).tolist()
        else:
            status, any_was_done = int(torch.where(bad, self._two, ended).amax()), False
        if status == 2:
            i = int(bad.nonzero()[0])
            raise TextRLError(
                f"action {int(flat[i])} in env {i} is outside the vocabulary; expected an "
                f"integer in [0, {self.single_action_space.n})"
            )
        # Write each active slot's token at its next response column; a finished slot writes into
        # the scratch column W, outside the observation.
        col = torch.where(active, self._next_col, self._scratch)
        self._ids.index_put_((self._rows, col), flat)
        self._mask.index_put_((self._rows, col), self._one)
        self._next_col += active
        self._active ^= ended  # ended slots were active: clear exactly them
        if status == 1:
            rewards = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
            info = self._score(ended.nonzero().flatten().tolist(), rewards)
        else:
            rewards, info = self._no_rewards if not self.copy else torch.zeros_like(self._no_rewards), {}
        if any_was_done:
            self._start(was_done.nonzero().flatten().tolist(), None)
        return self._obs(), rewards, terminated, truncated, info

    def state_dict(self) -> dict:
        """The per-slot prompt RNG states (for checkpoints; episodes in flight are not saved)."""
        return {
            "rngs": [rng.bit_generator.state for rng in self._rngs],
            "group_rng": self._group_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            TextRLError: a state saved with a different number of envs.
        """
        if len(state["rngs"]) != self.num_envs:
            raise TextRLError(
                f"env state has {len(state['rngs'])} slots; expected {self.num_envs} "
                f"(the same rollout.batch_size and number of processes)"
            )
        for rng, rng_state in zip(self._rngs, state["rngs"]):
            rng.bit_generator.state = rng_state
        if "group_rng" in state:
            self._group_rng.bit_generator.state = state["group_rng"]

    def _group_prompts(self, k: int, slots: int) -> list[str]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or slots % k:
            raise TextRLError(
                f"rollout.samples_per_prompt: got {k!r}; expected a divisor of the {slots} slots "
                f"being reset (rollout.batch_size per process)"
            )
        picks = self._group_rng.choice(len(self.prompts), size=slots // k, replace=len(self.prompts) < slots // k)
        return [self.prompts[i] for i in picks for _ in range(k)]

    # -- internals -----------------------------------------------------------------------------
    def _start(self, slots: list[int], prompts: Sequence[str] | None) -> None:
        if prompts is not None and len(prompts) not in (len(slots), self.num_envs):
            raise TextRLError(
                f"reset(options={{'prompts': ...}}): got {len(prompts)} prompts; expected "
                f"{len(slots)} (one per slot being reset)"
            )
        if prompts is not None and len(prompts) == self.num_envs and len(slots) != self.num_envs:
            prompts = [prompts[i] for i in slots]
        for k, i in enumerate(slots):
            prompt = prompts[k] if prompts is not None else self.prompts[int(self._rngs[i].integers(len(self.prompts)))]
            ids = self._encode(prompt)
            self._ids[i] = self.pad_token_id
            self._mask[i] = 0
            self.input_ids[i, self.max_prompt_tokens - len(ids) : self.max_prompt_tokens] = torch.tensor(
                ids, device=self.device
            )
            self.attention_mask[i, self.max_prompt_tokens - len(ids) : self.max_prompt_tokens] = 1
            self.episode_prompts[i] = prompt
            self.episode_responses[i] = ""
            self.episode_details[i] = None
        if slots:
            idx = torch.tensor(slots, device=self.device)
            self._next_col[idx] = self.max_prompt_tokens
            self._active[idx] = True
        if self.interaction is not None:
            multiturn.start_slots(self, slots, self._encode)

    def _encode(self, prompt: str) -> list[int]:
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            text = self.format_prompt(prompt) if self.format_prompt else prompt
            ids = encode_prompt(self.tokenizer, text, self.max_prompt_tokens, self.prompt_truncation)
            self._prompt_ids[prompt] = ids
        return ids

    def response_texts(self, slots: Sequence[int]) -> list[str]:
        """Decoded response text of each slot in ``slots`` (special tokens dropped)."""
        idx = torch.as_tensor(list(slots), dtype=torch.long, device=self.device)
        ids = self.input_ids[idx, self.max_prompt_tokens :].tolist()
        lengths = self.lengths[idx].tolist()
        return [decode_response(self.tokenizer, row[:n]) for row, n in zip(ids, lengths)]

    def _score(self, slots: list[int], rewards: torch.Tensor, *, scored=None) -> dict[str, Any]:
        """Score the ended ``slots`` (or take their ``scored`` RewardOutput: multi-turn episodes
        scored turn by turn), write the scores into ``rewards`` and return the step's info."""
        prompts = [self.episode_prompts[i] for i in slots]
        responses = self.response_texts(slots)
        out = scored if scored is not None else score_responses(self.reward_model, prompts, responses)
        idx = torch.tensor(slots, device=self.device)
        rewards[idx] = out.scores.to(self.device)
        for k, i in enumerate(slots):
            self.episode_responses[i] = responses[k]
            self.episode_details[i] = out.details[k] if out.details is not None else None
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[slots] = True
        columns = {"prompt": prompts, "response": responses, "score": out.scores.cpu().numpy()}
        for name, values in out.components.items():
            columns[f"reward/{name}"] = values.cpu().numpy()
        if out.details is not None:
            columns["reward_details"] = out.details
        info: dict[str, Any] = {}
        for key, values in columns.items():  # the Gymnasium vector-info layout: value array + "_key" mask
            numeric = isinstance(values, np.ndarray)
            arr = np.zeros(self.num_envs, dtype=np.float32) if numeric else np.full(self.num_envs, None, dtype=object)
            arr[slots] = values
            info[key], info[f"_{key}"] = arr, mask.copy()
        return info

    def _obs(self) -> dict[str, torch.Tensor]:
        if self.interaction is not None:
            obs = {
                "input_ids": self.input_ids,
                "attention_mask": self.attention_mask,
                "action_mask": self._amask[:, : self.width],
            }
            return obs if not self.copy else {k: v.clone() for k, v in obs.items()}
        if not self.copy:
            return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        return {"input_ids": self.input_ids.clone(), "attention_mask": self.attention_mask.clone()}
