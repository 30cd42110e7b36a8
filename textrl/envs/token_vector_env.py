"""N text-generation episodes stepped together, as torch tensors on the policy's device.

The same MDP as :class:`~textrl.envs.token_env.TokenGenEnv` (the episode model of
:mod:`textrl.envs.episode`), batched: one ``step`` appends one token to every episode, and all
turns and episodes that end on that step are scored by one batched reward call each.
Observations, rewards and flags are ``torch`` tensors on ``device``, so a policy on a GPU never
copies them to the host; on a step where no turn ends the only host transfer is one integer (was
any action out of range, did any turn end), the same "are we done?" check ``model.generate``
makes (with an interaction that has stop strings, also the N tokens, whose text is checked).
Decoding to text and asking the interaction happen only for the slots whose turn ends.

Seeding follows Gymnasium: ``reset(seed=s)`` seeds slot ``i`` with ``s + i``, so slot ``i``
draws the same prompts as a single env reset with seed ``s + i``.

Autoreset (``metadata["autoreset_mode"]``): ``NEXT_STEP`` (Gymnasium's default: the step after an
episode ends resets that slot, ignores its action and returns reward 0) or ``DISABLED`` (what
:mod:`textrl.rollout` uses: a finished slot keeps its final observation, ignores actions and returns
reward 0 and both flags false until a ``reset``, e.g. ``options={"reset_mask": mask}``).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textrl.envs.episode import Episode, EpisodeRules
from textrl.prompts import load_prompts
from textrl.envs.token_env import (
    check_lengths,
    decode_response,
    encode_prompt,
    eos_id_of,
    observation_space,
    pad_id_of,
    resolve_tokenizer,
    vocab_size_of,
)
from textrl.errors import TextRLError

MODES = {m.value.lower(): m for m in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)}
BUFFERS = ("input_ids", "attention_mask", "action_mask")


class TokenGenVectorEnv(VectorEnv):
    """``num_envs`` token-generation episodes as one batched torch environment.

    Args:
        tokenizer, prompts, reward_model, max_new_tokens, max_prompt_tokens, prompt_truncation: as for
            :class:`~textrl.envs.token_env.TokenGenEnv`, as are vocab_size, stop_on_eos, format_prompt,
            interaction, max_turns, max_episode_tokens and turn_reward.
        num_envs: number of parallel episodes N.
        device: torch device of every returned tensor.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default) or ``AutoresetMode.DISABLED``
            (or their names ``"nextstep"``/``"disabled"``).
        copy: as Gymnasium's ``SyncVectorEnv(copy=...)``: ``True`` returns a fresh copy of the
            observation from every ``reset``/``step``; ``False`` returns views of the env's buffers,
            valid until the next ``reset``, and on steps where nothing ends shared all-zero
            reward/flag tensors (cheaper per step: read them, never write into them; the rollout
            collector copies once per batch).

    ``reset(seed=, options=)`` → ``(obs, info)``; ``options`` may hold ``"prompts"`` (a list of
    N strings, or one per slot being reset), ``"reset_mask"`` (bool ``(N,)``: reset only these
    slots) and ``"group_size"`` k (with no ``"prompts"``: draw ``N / k`` prompts and start each in
    k consecutive slots, for group baselines, from a generator seeded by ``reset(seed=s)`` with
    ``s``). ``step(actions: LongTensor[N] or [N, 1])`` → ``(obs, rewards: FloatTensor[N],
    terminations: BoolTensor[N], truncations: BoolTensor[N], info)``; ``obs`` holds
    ``input_ids`` (``LongTensor[N, W]``), ``attention_mask`` and ``action_mask``
    (``Int8Tensor[N, W]``), ``W = max_prompt_tokens + max_episode_tokens``.
    ``info`` follows the Gymnasium vector-info layout (a value array and its ``_key`` mask per key):
    where episodes end, the columns of :meth:`~textrl.envs.episode.EpisodeRules.finish`
    (``prompt``, ``response``, ``score``, ``reward/<component>``, ...); where a slot received env
    tokens, ``env_tokens`` (the ids appended after its action); ``{}`` on steps where no turn ends.
    ``episode_prompts``, ``episode_responses`` and ``episode_details`` hold each slot's current
    prompt and last finished episode's response and explanation.

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
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode_of(autoreset_mode)}
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.prompts = load_prompts(prompts)
        self.num_envs, self.copy, self.device = num_envs, copy, torch.device(device)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.prompt_truncation, self.format_prompt = prompt_truncation, format_prompt
        self.pad_token_id = pad_id_of(self.tokenizer)
        vocab = vocab_size_of(self.tokenizer, vocab_size)
        self.rules = EpisodeRules(
            tokenizer=self.tokenizer,
            reward_model=reward_model,
            vocab_size=vocab,
            max_new_tokens=int(max_new_tokens),
            eos_id=eos_id_of(self.tokenizer, stop_on_eos),
            interaction=interaction,
            max_turns=max_turns,
            max_episode_tokens=max_episode_tokens,
            turn_reward=turn_reward,
        )
        self.width = self.max_prompt_tokens + self.rules.max_episode_tokens
        self.single_action_space = spaces.Discrete(vocab)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = observation_space(vocab, self.width)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._init_state()

    def _init_state(self) -> None:
        n, dev = self.num_envs, self.device
        # the observation buffers, with one scratch column past the width that finished slots write into
        self._buffers = {k: torch.zeros((n, self.width + 1), dtype=torch.int8, device=dev) for k in BUFFERS}
        self._buffers["input_ids"] = torch.full((n, self.width + 1), self.pad_token_id, dtype=torch.long, device=dev)
        self._active = torch.zeros(n, dtype=torch.bool, device=dev)  # episode running
        self._next_col = torch.full((n,), self.max_prompt_tokens, dtype=torch.long, device=dev)  # next token's column
        self._limit_col = self._next_col.clone()  # the current turn reaches a budget at this column
        self._episodes = [Episode("", ()) for _ in range(n)]
        self.episode_prompts: list[str] = [""] * n
        self.episode_responses: list[str] = [""] * n  # decoded when each episode ends
        self.episode_details: list[dict | None] = [None] * n  # the reward model's explanation, if any
        self._rngs = [seeding.np_random()[0] for _ in range(n)]
        self._group_rng = np.random.default_rng()  # prompt draws for options["group_size"]
        self._prompt_ids: dict[str, list[int]] = {}
        self._init_constants()

    def _init_constants(self) -> None:
        """The step's constants for ``num_envs`` slots, made once (a Python scalar in ``torch.where``
        costs an op per step), and the observation views of the buffers."""
        n, dev = self.num_envs, self.device
        self._two, self._scratch = torch.tensor(2, device=dev), torch.tensor(self.width, device=dev)
        self._one, self._rows = torch.tensor(1, dtype=torch.int8, device=dev), torch.arange(n, device=dev)
        self._no_flags = torch.zeros(n, dtype=torch.bool, device=dev)  # never written: returned as is
        self._no_rewards = torch.zeros(n, dtype=torch.float32, device=dev)  # never written: returned as is
        self._views = {k: v[:, : self.width] for k, v in self._buffers.items()}  # what observations show

    def branch(self, rows: Sequence[int], active: Sequence[bool] | None = None) -> "TokenGenVectorEnv":
        """A new vector env of ``len(rows)`` slots, slot j an exact copy of this env's slot ``rows[j]``
        at the current step: its tokens, masks, columns, turn bookkeeping (the :class:`Episode`,
        copied) and prompt; ``active`` (default: all) marks the copies that go on, the others start
        finished. The copy shares the tokenizer, the reward model, the rules and the interaction
        (whose ``respond`` is a function of the :class:`EpisodeView` it is given; see
        :attr:`textrl.Interaction.branchable`) and never touches this env.

        Args:
            rows: the source slot of each new slot (a slot may appear several times: K copies).
            active: bool per new slot.

        Raises:
            TextRLError: the interaction is not branchable, or a row outside ``[0, num_envs)``.
        """
        interaction = self.rules.interaction
        if interaction is not None and not getattr(interaction, "branchable", True):
            raise TextRLError(
                f"interaction {type(interaction).__name__}: branchable is false (it keeps state per episode); "
                f"expected an interaction whose respond() is a function of the EpisodeView to branch episodes"
            )
        rows = [int(i) for i in rows]
        if not rows or any(not 0 <= i < self.num_envs for i in rows):
            raise TextRLError(f"branch(rows): got {rows}; expected slots in [0, {self.num_envs})")
        index = torch.tensor(rows, device=self.device)
        new = copy.copy(self)
        new.num_envs = len(rows)
        new.action_space = batch_space(self.single_action_space, new.num_envs)
        new.observation_space = batch_space(self.single_observation_space, new.num_envs)
        new._buffers = {k: v[index].clone() for k, v in self._buffers.items()}
        on = torch.ones(len(rows), dtype=torch.bool, device=self.device) if active is None else active
        new._active = self._active[index] & torch.as_tensor(on, dtype=torch.bool, device=self.device)
        new._next_col, new._limit_col = self._next_col[index].clone(), self._limit_col[index].clone()
        new._episodes = [copy.deepcopy(self._episodes[i]) for i in rows]
        for name in ("episode_prompts", "episode_responses", "episode_details", "_rngs"):
            setattr(new, name, [copy.deepcopy(getattr(self, name)[i]) for i in rows])
        new._group_rng = copy.deepcopy(self._group_rng)
        new._init_constants()
        return new

    @property
    def done(self) -> torch.Tensor:
        """``BoolTensor[N]``: each slot's episode is over (awaiting a reset)."""
        return ~self._active

    @property
    def action_counts(self) -> torch.Tensor:
        """``LongTensor[N]``: actions (policy tokens) each slot's episode has taken so far."""
        return self._buffers["action_mask"].sum(1, dtype=torch.long)

    @property
    def lengths(self) -> torch.Tensor:
        """``LongTensor[N]``: tokens after the prompt each slot's episode has so far (policy and env)."""
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

        Device work per step: about a dozen elementwise ops on ``(N,)`` tensors, three indexed
        writes into the observation buffers and one host transfer of a single integer (2: an
        action outside the vocabulary, 1: a turn ended, 0: neither). The episode rules run on the
        host only for the slots whose turn ended.
        """
        flat = torch.as_tensor(actions, device=self.device).reshape(-1)
        flat = flat if flat.dtype == torch.long else flat.long()
        if flat.numel() != self.num_envs:
            raise TextRLError(f"step(actions): got {flat.numel()} actions; expected {self.num_envs}")
        active = self._active
        bad = (flat.clamp(0, self.single_action_space.n - 1) != flat) & active
        col = torch.where(active, self._next_col, self._scratch)  # finished slots write the scratch column
        for key, value in zip(BUFFERS, (flat, self._one, self._one)):
            self._buffers[key].index_put_((self._rows, col), value)
        self._next_col += active
        by_policy = self.rules.ends_turn(flat)
        if self.rules.checks_text:
            by_policy = by_policy | self._stop_hits(flat, active)
        ends = (by_policy | (self._next_col >= self._limit_col)) & active
        status = torch.where(bad, self._two, ends).amax()
        was_done = None
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            was_done = ~active
            status, any_was_done = torch.stack([status, was_done.any()]).tolist()  # the step's one host sync
        else:
            status, any_was_done = int(status), False  # the step's one host sync
        if status == 2:
            i = int(bad.nonzero()[0])
            raise TextRLError(
                f"action {int(flat[i])} in env {i} is outside the vocabulary; expected an "
                f"integer in [0, {self.single_action_space.n})"
            )
        if status == 1:
            rewards, terminated, truncated, info = self._close_turns(ends, by_policy)
        else:
            rewards, terminated, truncated, info = self._nothing_ended()
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

    def response_texts(self, slots: Sequence[int]) -> list[str]:
        """Each slot's tokens after the prompt (policy and env) decoded, special tokens dropped."""
        idx = torch.as_tensor(list(slots), dtype=torch.long, device=self.device)
        rows = torch.cat([self._buffers["input_ids"][idx], self._next_col[idx, None]], 1).tolist()
        return [decode_response(self.tokenizer, row[self.max_prompt_tokens : row[-1]]) for row in rows]

    # -- internals -----------------------------------------------------------------------------
    def _group_prompts(self, k: int, slots: int) -> list[str]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or slots % k:
            raise TextRLError(
                f"rollout.samples_per_prompt: got {k!r}; expected a divisor of the {slots} slots "
                f"being reset (rollout.batch_size per process)"
            )
        picks = self._group_rng.choice(len(self.prompts), size=slots // k, replace=len(self.prompts) < slots // k)
        return [self.prompts[i] for i in picks for _ in range(k)]

    def _start(self, slots: list[int], prompts: Sequence[str] | None) -> None:
        if prompts is not None and len(prompts) not in (len(slots), self.num_envs):
            raise TextRLError(
                f"reset(options={{'prompts': ...}}): got {len(prompts)} prompts; expected "
                f"{len(slots)} (one per slot being reset)"
            )
        if prompts is not None and len(prompts) == self.num_envs and len(slots) != self.num_envs:
            prompts = [prompts[i] for i in slots]
        P = self.max_prompt_tokens
        for k, i in enumerate(slots):
            prompt = prompts[k] if prompts is not None else self.prompts[int(self._rngs[i].integers(len(self.prompts)))]
            ids = self._encode(prompt)
            for key, buffer in self._buffers.items():
                buffer[i] = self.pad_token_id if key == "input_ids" else 0
            self._buffers["input_ids"][i, P - len(ids) : P] = torch.tensor(ids, device=self.device)
            self._buffers["attention_mask"][i, P - len(ids) : P] = 1
            self._episodes[i] = Episode(prompt, tuple(ids))
            self.episode_prompts[i], self.episode_responses[i], self.episode_details[i] = prompt, "", None
        if slots:
            idx = torch.tensor(slots, device=self.device)
            self._next_col[idx] = P
            self._limit_col[idx] = P + self.rules.turn_budget(0)
            self._active[idx] = True

    def _encode(self, prompt: str) -> list[int]:
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            text = self.format_prompt(prompt) if self.format_prompt else prompt
            ids = encode_prompt(self.tokenizer, text, self.max_prompt_tokens, self.prompt_truncation)
            self._prompt_ids[prompt] = ids
        return ids

    def _stop_hits(self, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """``BoolTensor[N]``: the active slots whose turn text now holds a stop string (one host
        transfer of the tokens; :meth:`~textrl.envs.episode.EpisodeRules.stop_hit` per active slot)."""
        host_tokens, host_active = torch.stack([tokens, active.long()]).tolist()
        hits = [bool(on) and self.rules.stop_hit(e, t) for e, t, on in zip(self._episodes, host_tokens, host_active)]
        return torch.tensor(hits, device=self.device)

    def _nothing_ended(self):
        if self.copy:
            return (
                torch.zeros_like(self._no_rewards),
                torch.zeros_like(self._active),
                torch.zeros_like(self._active),
                {},
            )
        return self._no_rewards, self._no_flags, self._no_flags, {}

    def _close_turns(self, ends: torch.Tensor, by_policy: torch.Tensor):
        """The rules for every slot whose turn ended on this step: ask the interaction, append its
        tokens, pay the turn rewards and, for the episodes that end, the reward model's scores."""
        slots = ends.nonzero().flatten().tolist()
        idx = torch.tensor(slots, device=self.device)
        P, n = self.max_prompt_tokens, self.num_envs
        columns = [self._buffers["input_ids"][idx], self._next_col[idx, None], by_policy[idx, None].long()]
        rows = torch.cat(columns, 1).tolist()  # one host transfer: each slot's tokens, end column, how it ended
        closed = []
        for i, row in zip(slots, rows):
            episode = self._episodes[i]
            turn = row[P + episode.used : row[-2]]
            closed.append((episode, self.rules.close_turn(episode, turn, by_policy=bool(row[-1]))))
        self.rules.score_turns_of(closed)
        rewards = np.zeros(n, dtype=np.float32)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        appended: dict[int, list[int]] = {}
        for i, (episode, outcome) in zip(slots, closed):
            rewards[i] = outcome.reward
            rewards[i] += outcome.score
            terminated[i], truncated[i] = outcome.terminated, outcome.truncated
            if outcome.appended:
                appended[i] = outcome.appended
        self._append(appended)
        info = self._finish([i for i, (_, o) in zip(slots, closed) if o.ended], rewards)
        if appended:
            info.update(vector_info({i: {"env_tokens": ids} for i, ids in appended.items()}, n))
        as_tensor = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return as_tensor(rewards), as_tensor(terminated), as_tensor(truncated), info

    def _append(self, appended: dict[int, list[int]]) -> None:
        """Write each slot's env tokens after its action (``action_mask`` 0) in one indexed write
        per buffer, and set the next turn's budget."""
        if not appended:
            return
        slots = list(appended)
        cols = self._next_col[torch.tensor(slots, device=self.device)].tolist()
        rows = [i for i in slots for _ in appended[i]]
        columns = [c + k for i, c in zip(slots, cols) for k in range(len(appended[i]))]
        index = (torch.tensor(rows, device=self.device), torch.tensor(columns, device=self.device))
        ids = torch.tensor([t for i in slots for t in appended[i]], dtype=torch.long, device=self.device)
        self._buffers["input_ids"].index_put_(index, ids)
        self._buffers["attention_mask"].index_put_(index, self._one)
        idx = torch.tensor(slots, device=self.device)
        self._next_col[idx] += torch.tensor([len(appended[i]) for i in slots], device=self.device)
        used = [self._episodes[i].used for i in slots]
        limits = [self.max_prompt_tokens + self.rules.turn_budget(u) for u in used]
        self._limit_col[idx] = torch.tensor(limits, device=self.device)

    def _finish(self, slots: list[int], rewards: np.ndarray) -> dict[str, Any]:
        """Score the episodes of ``slots`` that ended on this step, add what they are paid to
        ``rewards`` and return their info columns."""
        if not slots:
            return {}
        self._active[torch.tensor(slots, device=self.device)] = False
        responses = self.response_texts(slots)
        paid, infos = self.rules.finish([self._episodes[i] for i in slots], responses)
        for k, i in enumerate(slots):
            rewards[i] += paid[k]
            self.episode_responses[i] = responses[k]
            self.episode_details[i] = infos[k].get("reward_details")
        return vector_info(dict(zip(slots, infos)), self.num_envs)

    def _obs(self) -> dict[str, torch.Tensor]:
        return dict(self._views) if not self.copy else {k: v.clone() for k, v in self._views.items()}


def autoreset_mode_of(mode: AutoresetMode | str) -> AutoresetMode:
    """``NEXT_STEP`` or ``DISABLED`` from the mode or its name.

    Raises:
        TextRLError: any other mode.
    """
    if isinstance(mode, str):
        if mode.lower() not in MODES:
            raise TextRLError(f"autoreset_mode: got {mode!r}; expected one of {sorted(MODES)}")
        mode = MODES[mode.lower()]
    if mode not in MODES.values():
        raise TextRLError(f"autoreset_mode: got {mode}; expected NEXT_STEP or DISABLED")
    return mode


def vector_info(rows: dict[int, dict[str, Any]], num_envs: int) -> dict[str, Any]:
    """The Gymnasium vector-info layout of per-slot info dicts: for each key, an array of
    ``num_envs`` values (float32 for numbers, objects otherwise) and its ``_key`` bool mask of the
    slots that have it."""
    info: dict[str, Any] = {}
    for i, row in rows.items():
        for key, value in row.items():
            if key not in info:
                numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
                info[key] = np.zeros(num_envs, np.float32) if numeric else np.full(num_envs, None, dtype=object)
                info[f"_{key}"] = np.zeros(num_envs, dtype=bool)
            info[key][i], info[f"_{key}"][i] = value, True
    return info
