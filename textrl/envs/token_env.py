"""Text generation as a Gymnasium environment, one episode per prompt, and the helpers both token
envs share (tokenizer, prompt encoding, spaces).

The MDP (InstructGPT's RL stage seen as RL): the state is the prompt plus the tokens so far, the
action is the next token id, the reward is 0 on every step but those that end a turn or the episode,
and the last step gets the reward model's score of (prompt text, decoded response text). A
single-turn episode is ``terminated`` when the policy emits EOS and ``truncated`` after
``max_new_tokens`` tokens; with an interaction it is a sequence of turns (:mod:`textrl.envs.episode`).

Observation layout (shared with :class:`~textrl.envs.token_vector_env.TokenGenVectorEnv`): three
arrays of width ``W = max_prompt_tokens + max_episode_tokens``; the prompt's tokens sit
right-aligned in the first ``max_prompt_tokens`` columns (left padding, as for batched
generation) and the tokens after it fill the columns from ``max_prompt_tokens`` on; ``action_mask``
marks the tokens the policy chose (env tokens of a multi-turn episode have 0)::

    input_ids      [pad pad p0 p1 p2 | r0 r1 e0 r2 pad]
    attention_mask [ 0   0   1  1  1 |  1  1  1  1   0 ]
    action_mask    [ 0   0   0  0  0 |  1  1  0  1   0 ]
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from textrl.envs.episode import Episode, EpisodeRules
from textrl.prompts import load_prompts
from textrl.errors import TextRLError, first_line

log = logging.getLogger(__name__)

TRUNCATIONS = ("left", "error")


def resolve_tokenizer(tokenizer):
    """Return a Hugging Face tokenizer: ``tokenizer`` itself, or one loaded from an id/path.

    Raises:
        TextRLError: the id or path cannot be loaded.
    """
    if not isinstance(tokenizer, str):
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as e:
        raise TextRLError(
            f"tokenizer: cannot load {tokenizer!r} ({first_line(e)}); expected a hub id or a local directory"
        ) from None


def eos_id_of(tokenizer, stop_on_eos: bool) -> int | None:
    """The EOS id that ends an episode (``None`` when ``stop_on_eos`` is off).

    Raises:
        TextRLError: ``stop_on_eos`` with a tokenizer that has no EOS token (no episode could
            ever terminate; only the length limit would end it).
    """
    if not stop_on_eos:
        return None
    if tokenizer.eos_token_id is None:
        raise TextRLError(
            f"env.stop_on_eos: got true, but tokenizer {type(tokenizer).__name__} has no EOS token; "
            f"expected a tokenizer with eos_token set, or env.stop_on_eos=false"
        )
    return int(tokenizer.eos_token_id)


def check_lengths(max_new_tokens: int, max_prompt_tokens: int) -> None:
    """Raise :class:`TextRLError` unless both lengths are positive integers."""
    for name, value in (("env.max_new_tokens", max_new_tokens), ("env.max_prompt_tokens", max_prompt_tokens)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise TextRLError(f"{name}: got {value!r}; expected a positive integer")


def pad_id_of(tokenizer) -> int:
    """The id used to fill empty observation columns: pad, else EOS, else 0 (masked anyway)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def encode_prompt(tokenizer, text: str, max_prompt_tokens: int, truncation: str = "left") -> list[int]:
    """Tokenize one prompt (with the tokenizer's special tokens, e.g. BOS) to at most
    ``max_prompt_tokens`` ids.

    A longer prompt keeps its last ``max_prompt_tokens`` tokens with a warning
    (``truncation="left"``) or raises (``truncation="error"``).

    Raises:
        TextRLError: the prompt is too long and ``truncation="error"``, the prompt encodes to
            no tokens, or ``truncation`` is not one of ``left``/``error``.
    """
    if truncation not in TRUNCATIONS:
        raise TextRLError(f"env.prompt_truncation: got {truncation!r}; expected one of {list(TRUNCATIONS)}")
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise TextRLError(f"prompt {text!r} encodes to no tokens; expected a non-empty prompt")
    if len(ids) > max_prompt_tokens:
        if truncation == "error":
            raise TextRLError(
                f"prompt {text[:40]!r}... has {len(ids)} tokens; expected at most "
                f"env.max_prompt_tokens={max_prompt_tokens} (or env.prompt_truncation=left)"
            )
        log.warning("prompt with %d tokens cut from the left to env.max_prompt_tokens=%d", len(ids), max_prompt_tokens)
        ids = ids[-max_prompt_tokens:]
    return ids


def decode_response(tokenizer, ids: Sequence[int]) -> str:
    """Decode response token ids to text, dropping special tokens (EOS, pad)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def observation_space(vocab_size: int, width: int) -> spaces.Dict:
    """``Dict(input_ids=Box(int64, (width,)), attention_mask=Box(int8, (width,)),
    action_mask=Box(int8, (width,)))``."""
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, vocab_size - 1, shape=(width,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(width,), dtype=np.int8),
            "action_mask": spaces.Box(0, 1, shape=(width,), dtype=np.int8),
        }
    )


def vocab_size_of(tokenizer, vocab_size: int | None) -> int:
    """The action-space size: ``len(tokenizer)`` unless given (a model may have more logits).

    Raises:
        TextRLError: ``vocab_size`` smaller than the tokenizer's vocabulary.
    """
    n = len(tokenizer)
    if vocab_size is None:
        return n
    if vocab_size < n:
        raise TextRLError(f"vocab_size: got {vocab_size}; expected at least len(tokenizer)={n}")
    return int(vocab_size)


class TokenGenEnv(gym.Env):
    """One prompt → one episode of generated tokens, a token per step (Gymnasium ``Env``); the
    episode model is :mod:`textrl.envs.episode` (single-turn: no interaction).

    Args:
        tokenizer: a Hugging Face tokenizer, or a hub id / local directory to load one from.
        prompts: a list of prompt strings, or anything :func:`textrl.prompts.load_prompts`
            accepts (``"builtin"``, a file path, a ``datasets`` id).
        reward_model: ``callable(prompts: list[str], responses: list[str]) -> FloatTensor[B]``
            (see :class:`textrl.RewardModel`), called once at the end of each episode.
        max_new_tokens: policy tokens per turn (a single-turn episode's response length limit T);
            reaching it truncates the episode.
        max_prompt_tokens: prompt length limit P.
        prompt_truncation: ``"left"`` keeps the last P tokens of a longer prompt with a warning;
            ``"error"`` raises.
        vocab_size: action-space size; defaults to ``len(tokenizer)``.
        stop_on_eos: the tokenizer's EOS (and chat end-of-turn) token ends the policy's turn.
        format_prompt: optional ``str -> str`` applied before tokenising (e.g. a chat template);
            the reward model and ``info`` get the raw prompt.
        interaction: optional :class:`textrl.Interaction`: an episode is then a sequence of turns
            (see :mod:`textrl.envs.episode`); ``info["env_tokens"]`` lists the ids appended after
            the step's action.
        max_turns: policy turns per episode; max_episode_tokens: policy + env tokens after the
            prompt (default: ``max_new_tokens`` for one turn, ``2 · max_turns · max_new_tokens``
            otherwise); turn_reward: ``final`` or ``model`` (see :mod:`textrl.envs.episode`).

    Spaces: ``observation_space`` is ``Dict(input_ids=Box(int64,(W,)), attention_mask=Box(int8,(W,)),
    action_mask=Box(int8,(W,)))`` with ``W = P + max_episode_tokens`` and the layout in the module
    docstring (``action_mask`` 1 on the tokens the policy chose); ``action_space`` is
    ``Discrete(vocab_size)``.

    ``reset(seed=, options={"prompt": str})`` starts an episode on the given prompt, or on one
    drawn uniformly from ``prompts`` with the env's ``np_random``. ``step(token)`` returns
    ``(obs, reward, terminated, truncated, info)``; the final step's ``info`` holds ``prompt``,
    ``response`` and ``score`` (see :meth:`~textrl.envs.episode.EpisodeRules.finish`).

    Raises:
        TextRLError: bad lengths or episode settings, an empty prompt list, an action outside
            ``[0, vocab_size)``, ``step`` after the episode ended, or a reward model returning a
            wrong shape or NaN.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tokenizer,
        prompts: Sequence[str] | str,
        reward_model: Callable[[list[str], list[str]], Any],
        max_new_tokens: int = 32,
        max_prompt_tokens: int = 64,
        prompt_truncation: str = "left",
        vocab_size: int | None = None,
        stop_on_eos: bool = True,
        render_mode: str | None = None,
        format_prompt: Callable[[str], str] | None = None,
        interaction=None,
        max_turns: int = 1,
        max_episode_tokens: int | None = None,
        turn_reward: str = "final",
    ):
        check_lengths(max_new_tokens, max_prompt_tokens)
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.prompts = load_prompts(prompts)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.prompt_truncation, self.format_prompt, self.render_mode = prompt_truncation, format_prompt, render_mode
        self.pad_token_id = pad_id_of(self.tokenizer)
        self.action_space = spaces.Discrete(vocab_size_of(self.tokenizer, vocab_size))
        self.rules = EpisodeRules(
            tokenizer=self.tokenizer,
            reward_model=reward_model,
            vocab_size=int(self.action_space.n),
            max_new_tokens=int(max_new_tokens),
            eos_id=eos_id_of(self.tokenizer, stop_on_eos),
            interaction=interaction,
            max_turns=max_turns,
            max_episode_tokens=max_episode_tokens,
            turn_reward=turn_reward,
        )
        self.width = self.max_prompt_tokens + self.rules.max_episode_tokens
        self.observation_space = observation_space(int(self.action_space.n), self.width)
        self._buffers = {k: np.zeros(self.width, dtype=space.dtype) for k, space in self.observation_space.items()}
        self._episode = Episode("", ())
        self._t, self._done = 0, True  # tokens after the prompt (policy and env); episode over

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``options={"prompt": str}`` picks the prompt, else one is sampled.

        Returns:
            ``(obs, info)`` with ``info = {"prompt": str}``.
        """
        super().reset(seed=seed)
        prompt = (options or {}).get("prompt")
        if prompt is None:
            prompt = self.prompts[int(self.np_random.integers(len(self.prompts)))]
        text = self.format_prompt(prompt) if self.format_prompt else prompt
        ids = encode_prompt(self.tokenizer, text, self.max_prompt_tokens, self.prompt_truncation)
        for buffer in self._buffers.values():
            buffer[:] = 0
        P = self.max_prompt_tokens
        self._buffers["input_ids"][:] = self.pad_token_id
        self._buffers["input_ids"][P - len(ids) : P] = ids
        self._buffers["attention_mask"][P - len(ids) : P] = 1
        self._episode, self._t, self._done = Episode(prompt, tuple(ids)), 0, False
        return self._obs(), {"prompt": prompt}

    def step(self, action):
        """Append token ``action``; see the class docstring for the returned tuple."""
        if self._done:
            raise TextRLError("step() called on an episode that has ended; expected reset() first")
        token = _as_token(action, int(self.action_space.n))
        episode, rules = self._episode, self.rules
        self._write([token], action=1)
        by_policy = bool(rules.ends_turn(token)) | (rules.checks_text and rules.stop_hit(episode, token))
        if not by_policy and self._t < rules.turn_budget(episode.used):
            return self._obs(), 0.0, False, False, {}
        turn = self._buffers["input_ids"][self.max_prompt_tokens + episode.used : self.max_prompt_tokens + self._t]
        outcome = rules.close_turn(episode, turn.tolist(), by_policy=by_policy)
        rules.score_turns_of([(episode, outcome)])
        self._write(outcome.appended, action=0)
        reward, info = outcome.reward + outcome.score, {}
        if outcome.appended:
            info["env_tokens"] = list(outcome.appended)
        if outcome.ended:
            self._done = True
            paid, (end,) = rules.finish([episode], [self._response()])
            reward += paid[0]
            info.update({k: float(v) if isinstance(v, np.floating) else v for k, v in end.items()})
        return self._obs(), float(reward), outcome.terminated, outcome.truncated, info

    def render(self):
        """``"ansi"`` mode: the prompt and every token after it so far, as text."""
        if self.render_mode == "ansi":
            return f"{self._episode.prompt}|{self._response()}"
        return None

    def _write(self, ids: list[int], *, action: int) -> None:
        """Append ``ids`` after the tokens so far (``action_mask`` = ``action``)."""
        col = self.max_prompt_tokens + self._t
        self._buffers["input_ids"][col : col + len(ids)] = ids
        self._buffers["attention_mask"][col : col + len(ids)] = 1
        self._buffers["action_mask"][col : col + len(ids)] = action
        self._t += len(ids)

    def _response(self) -> str:
        P = self.max_prompt_tokens
        return decode_response(self.tokenizer, self._buffers["input_ids"][P : P + self._t])

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._buffers.items()}


def _as_token(action, vocab_size: int) -> int:
    try:
        token = int(np.asarray(action).item())
    except (TypeError, ValueError):
        raise TextRLError(f"action {action!r} is not a token id; expected an integer in [0, {vocab_size})") from None
    if not 0 <= token < vocab_size:
        raise TextRLError(f"action {token} is outside the vocabulary; expected an integer in [0, {vocab_size})")
    return token
