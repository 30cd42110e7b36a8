"""Turn bookkeeping of multi-turn episodes, shared by the single and the vector token env.

With an :class:`~textrl.interactions.base.Interaction`, an episode is a sequence of turns::

    reset ─▶ [prompt] ─▶ policy turn (one sampled token per step) ─▶ turn ends ─▶ interaction
                              ▲                                                    │
                              └──── env tokens appended (action_mask 0) ◀──────────┤
                                                          end ─▶ reward model ─▶ terminated

A policy turn ends at EOS (with ``stop_on_eos``), at the tokenizer's end-of-turn token
(:func:`~textrl.interactions.base.end_of_turn_id`), or when the decoded text of the current
turn's ids contains one of the interaction's ``stop_strings`` (so a stop string ending inside a
token ends the turn at that token; the ids are decoded for this check only, never re-encoded).

Rewards (``turn_reward``, :data:`~textrl.config.choices.TURN_REWARDS`): an interaction's own
turn rewards (``Reply.reward``) are paid on the step that ends the turn. ``final`` (the default):
the reward model scores the whole episode (prompt, every token after it decoded) once, on its last
step. ``model``: the reward model scores each policy turn in context instead, the pair
:meth:`~textrl.interactions.base.Interaction.reward_input` writes (the conversation so far, the
turn's reply), and the score is paid on the step that ends the turn; nothing more is paid at the
end, so an episode's rewards sum to its turn scores (plus the interaction's turn rewards). The
vector env scores every turn that ends on a step in one batched reward call. The env is the one place
rewards are decided: the rollout collector only places each step's reward at the column of the
token that step appended (:mod:`textrl.rollout.multiturn`), so PPO's GAE sees one reward per turn.

Budgets, each of which truncates the episode (it is then scored by the reward model as usual):
``max_new_tokens`` policy tokens per turn, ``max_turns`` policy turns (an interaction that still
returns tokens after the last one), ``max_episode_tokens`` tokens after the prompt, policy and
env tokens together (env tokens that would leave no room for one more policy token).

Faults never crash the episode: an interaction that raises, returns something that is not a
:class:`~textrl.interactions.base.Reply`, ids outside the vocabulary or a non-finite reward gives
the policy an error message instead (``Interaction.error_ids``); if even that fails, the episode is
truncated.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from textrl.errors import TextRLError
from textrl.interactions.base import EpisodeView, Interaction, Reply, Turn, end_of_turn_id

log = logging.getLogger(__name__)


@dataclass
class EpisodeTurns:
    """One episode's turns so far (host-side).

    Attributes:
        prompt: raw prompt text; prompt_ids: its ids in the state.
        turns: finished turns; current: ids of the policy turn in progress.
        used: tokens after the prompt (policy + env); policy_turns: finished policy turns.
        turn_reward: sum of the interaction's turn rewards so far.
        turn_scores: the reward model's score of each policy turn so far (``turn_reward=model``).
        components: per component of a composite reward model, the sum of its turn scores.
        details: the reward model's explanation of each turn (``None`` where it gives none).
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    turns: list[Turn] = field(default_factory=list)
    current: list[int] = field(default_factory=list)
    used: int = 0
    policy_turns: int = 0
    turn_reward: float = 0.0
    turn_scores: list[float] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)
    details: list = field(default_factory=list)

    def add_turn_score(self, score: float, *, components: dict[str, float], details) -> None:
        """Record the reward model's ``score`` of the policy turn that just ended (with its
        composite ``components`` and ``details``)."""
        self.turn_scores.append(float(score))
        for name, value in components.items():
            self.components[name] = self.components.get(name, 0.0) + float(value)
        self.details.append(details)


@dataclass
class TurnOutcome:
    """What one policy token did: ``appended`` env ids (after the token), ``reward`` (the ended
    turn's reward, 0.0 otherwise), ``terminated``/``truncated`` the episode; ``scored`` is the
    ``(context, reply)`` the reward model is to score when a policy turn ended and turns are
    scored (``turn_reward=model``), else ``None``."""

    appended: list[int] = field(default_factory=list)
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    scored: tuple[str, str] | None = None

    @property
    def ended(self) -> bool:
        """The episode is over."""
        return self.terminated or self.truncated


def check_multiturn(*, max_turns, max_episode_tokens, turn_reward: str = "final") -> None:
    """Raise :class:`TextRLError` unless both budgets are positive integers and ``turn_reward`` is
    one of :data:`~textrl.config.choices.TURN_REWARDS`."""
    from textrl.config.choices import TURN_REWARDS

    if turn_reward not in TURN_REWARDS:
        raise TextRLError(f"env.turn_reward: got {turn_reward!r}; expected one of {list(TURN_REWARDS)}")
    for name, value in (("env.max_turns", max_turns), ("env.max_episode_tokens", max_episode_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise TextRLError(f"{name}: got {value!r}; expected a positive integer")


class TurnRules:
    """Applies the multi-turn MDP's rules to one policy token (see the module docstring).

    Args:
        interaction: the :class:`Interaction` (``setup(tokenizer)`` is called here).
        tokenizer: the env's tokenizer.
        max_new_tokens: policy tokens per turn.
        max_turns: policy turns per episode.
        max_episode_tokens: tokens after the prompt per episode.
        eos_id: the EOS id that ends a turn (``None``: EOS does not).
        vocab_size: env ids must lie in ``[0, vocab_size)``.
        turn_reward: ``final`` or ``model`` (see the module docstring): with ``model`` each
            outcome that ends a policy turn carries the turn's ``scored`` pair.

    Raises:
        TextRLError: ``interaction`` is not an :class:`Interaction`, a budget is not a positive
            integer, or an unknown ``turn_reward``.
    """

    def __init__(
        self,
        *,
        interaction: Interaction,
        tokenizer,
        max_new_tokens: int,
        max_turns: int,
        max_episode_tokens: int,
        eos_id: int | None,
        vocab_size: int,
        turn_reward: str = "final",
    ):
        if not isinstance(interaction, Interaction):
            raise TextRLError(f"interaction: got {type(interaction).__name__}; expected a textrl.Interaction")
        check_multiturn(max_turns=max_turns, max_episode_tokens=max_episode_tokens, turn_reward=turn_reward)
        self.score_turns = turn_reward == "model"
        interaction.setup(tokenizer)
        self.interaction, self.tokenizer = interaction, tokenizer
        self.max_new_tokens, self.max_turns, self.max_episode_tokens = max_new_tokens, max_turns, max_episode_tokens
        self.vocab_size = vocab_size
        self.end_ids = {i for i in (eos_id, end_of_turn_id(tokenizer)) if i is not None}
        self.stop_strings = tuple(s for s in getattr(interaction, "stop_strings", ()) if s)

    def after_action(self, episode: EpisodeTurns, token: int) -> TurnOutcome:
        """Add policy ``token`` to ``episode``; end the turn and ask the interaction when it ends."""
        episode.current.append(token)
        episode.used += 1
        ends = token in self.end_ids or (self.stop_strings and self._stop_hit(episode.current))
        if not ends:
            if len(episode.current) >= self.max_new_tokens or episode.used >= self.max_episode_tokens:
                scored = self._close_turn(episode)
                return TurnOutcome(truncated=True, scored=scored)
            return TurnOutcome()
        scored = self._close_turn(episode)
        reply = self._ask(episode)
        if reply is None:  # even the error message failed
            return TurnOutcome(truncated=True, scored=scored)
        reward = float(reply.reward or 0.0)
        episode.turn_reward += reward
        if reply.done:
            return TurnOutcome(reward=reward, terminated=True, scored=scored)
        ids = list(reply.ids)
        if episode.policy_turns >= self.max_turns or episode.used + len(ids) + 1 > self.max_episode_tokens:
            return TurnOutcome(reward=reward, truncated=True, scored=scored)
        episode.used += len(ids)
        episode.turns.append(Turn("env", tuple(ids), self._decode(ids)))
        return TurnOutcome(appended=ids, reward=reward, scored=scored)

    def view(self, episode: EpisodeTurns) -> EpisodeView:
        """The :class:`EpisodeView` of ``episode``."""
        return EpisodeView(episode.prompt, episode.prompt_ids, tuple(episode.turns))

    # -- internals -----------------------------------------------------------------------------
    def _decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _stop_hit(self, ids: list[int]) -> bool:
        text = self._decode(ids)
        return any(s in text for s in self.stop_strings)

    def _close_turn(self, episode: EpisodeTurns) -> tuple[str, str] | None:
        episode.turns.append(Turn("policy", tuple(episode.current), self._decode(episode.current)))
        episode.current = []
        episode.policy_turns += 1
        if not self.score_turns:
            return None
        try:
            context, reply = self.interaction.reward_input(self.view(episode))
            return str(context), str(reply)
        except Exception as e:  # the interaction's failure is the episode's: score the bare turn
            log.warning(
                "interaction %s: reward_input raised %s: %s", type(self.interaction).__name__, type(e).__name__, e
            )
            return episode.prompt, self.tokenizer.decode(list(episode.turns[-1].ids), skip_special_tokens=True).strip()

    def _ask(self, episode: EpisodeTurns) -> Reply | None:
        try:
            reply = self.interaction.respond(self.view(episode))
            problem = self._problem(reply)
        except Exception as e:  # a tool's failure is the episode's, never the run's
            problem = f"{type(e).__name__}: {e}"
        if problem is None:
            return reply
        log.warning("interaction %s: %s", type(self.interaction).__name__, problem)
        try:
            ids = [int(i) for i in self.interaction.error_ids(problem)]
            if any(not 0 <= i < self.vocab_size for i in ids):
                return None
            return Reply.append(ids)
        except Exception:
            return None

    def _problem(self, reply) -> str | None:
        if not isinstance(reply, Reply):
            return f"respond() returned {type(reply).__name__}; expected a textrl.Reply"
        if reply.reward is not None and not (isinstance(reply.reward, (int, float)) and math.isfinite(reply.reward)):
            return f"reward {reply.reward!r} is not a finite number"
        if reply.ids is not None and any(not isinstance(i, int) or not 0 <= i < self.vocab_size for i in reply.ids):
            return f"ids outside the vocabulary [0, {self.vocab_size})"
        return None


# -- the envs' multi-turn paths (called by TokenGenEnv / TokenGenVectorEnv when an interaction is set)


def default_episode_tokens(*, max_new_tokens: int, max_turns: int) -> int:
    """``env.max_episode_tokens`` when not given: ``2 · max_turns · max_new_tokens`` (room for every
    policy turn at its limit and as many env tokens)."""
    return 2 * max_turns * max_new_tokens


def setup_env(
    env, *, interaction, max_turns: int, max_episode_tokens: int | None, vocab: int, turn_reward: str = "final"
) -> None:
    """Make ``env`` (single or vector) multi-turn: budgets, :class:`TurnRules` (with
    ``turn_reward``), observation width ``P + max_episode_tokens`` and the ``action_mask``
    observation key.

    Raises:
        TextRLError: a bad interaction, budget or ``turn_reward``.
    """
    from gymnasium import spaces

    from textrl.envs.token_env import observation_space

    if max_episode_tokens is None and isinstance(max_turns, int) and not isinstance(max_turns, bool):
        max_episode_tokens = default_episode_tokens(max_new_tokens=env.max_new_tokens, max_turns=max_turns)
    env.turn_rules = TurnRules(
        interaction=interaction,
        tokenizer=env.tokenizer,
        max_new_tokens=env.max_new_tokens,
        max_turns=max_turns,
        max_episode_tokens=max_episode_tokens,
        eos_id=env.eos_token_id,
        vocab_size=vocab,
        turn_reward=turn_reward,
    )
    env.max_turns, env.max_episode_tokens, env.turn_reward = max_turns, max_episode_tokens, turn_reward
    env.width = env.max_prompt_tokens + max_episode_tokens
    single = observation_space(vocab, env.width)
    single = spaces.Dict({**single.spaces, "action_mask": spaces.Box(0, 1, shape=(env.width,), dtype=np.int8)})
    if hasattr(env, "num_envs"):
        from gymnasium.vector.utils import batch_space

        env.single_observation_space = single
        env.observation_space = batch_space(single, env.num_envs)
    else:
        env.observation_space = single


def vector_step(env, actions):
    """:meth:`TokenGenVectorEnv.step` with an interaction: one policy token per active slot, then
    for each slot whose turn ended the interaction's reply, in the same step.

    Per step: one host transfer of the N actions (with the slots' flags and columns), the turn rules in Python for each active slot,
    one indexed write of every new token (policy and env) into ``input_ids``/``attention_mask``/
    ``action_mask``. Rewards: a turn's reward on the step that ends it; at the episode's end the
    reward model's score is added. ``info`` on steps where a slot received env tokens has
    ``env_tokens`` (object array of id lists, the ids appended after that slot's action) with its
    ``_env_tokens`` mask; with ``turn_reward=model`` the turns that ended on the step are scored in
    one reward call and each slot's score added to its reward. Where episodes end: the single-turn
    columns with ``score`` = reward-model score (with ``turn_reward=model`` the sum of the
    episode's turn scores, not paid again) + the episode's interaction turn rewards,
    ``reward/model`` and ``reward/interaction`` (the two parts) and ``turns`` (policy turns).

    Raises:
        TextRLError: a wrong number of actions, or an action outside the vocabulary.
    """
    import torch
    from gymnasium.vector import AutoresetMode

    flat = actions.reshape(-1)
    if flat.numel() != env.num_envs:
        raise TextRLError(f"step(actions): got {flat.numel()} actions; expected {env.num_envs}")
    tokens, active, columns = torch.stack([flat, env._active.long(), env._next_col]).tolist()  # one host transfer
    vocab = int(env.single_action_space.n)
    for i, (tok, on) in enumerate(zip(tokens, active)):
        if on and not 0 <= tok < vocab:
            raise TextRLError(f"action {tok} in env {i} is outside the vocabulary; expected an integer in [0, {vocab})")
    n = env.num_envs
    rows, cols, ids, amask = [], [], [], []
    rewards = np.zeros(n, dtype=np.float32)
    terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    appended: list = [None] * n
    pending: list[tuple[int, tuple[str, str]]] = []  # (slot, (context, reply)) of turns to score
    for i in range(n):
        if not active[i]:
            continue
        col = columns[i]
        rows.append(i), cols.append(col), ids.append(tokens[i]), amask.append(1)
        out = env.turn_rules.after_action(env._episodes[i], tokens[i])
        for k, tid in enumerate(out.appended):
            rows.append(i), cols.append(col + 1 + k), ids.append(tid), amask.append(0)
        columns[i] = col + 1 + len(out.appended)
        if out.appended:
            appended[i] = list(out.appended)
        rewards[i], terminated[i], truncated[i] = out.reward, out.terminated, out.truncated
        if out.scored is not None:
            pending.append((i, out.scored))
    if pending:
        score_turns(
            env.reward_model,
            episodes=[env._episodes[i] for i, _ in pending],
            pairs=[p for _, p in pending],
            rewards=rewards,
            slots=[i for i, _ in pending],
        )
    dev = env.device
    if rows:
        index = (torch.tensor(rows, device=dev), torch.tensor(cols, device=dev))
        env._ids.index_put_(index, torch.tensor(ids, dtype=torch.long, device=dev))
        env._mask.index_put_(index, torch.ones(len(rows), dtype=torch.int8, device=dev))
        env._amask.index_put_(index, torch.tensor(amask, dtype=torch.int8, device=dev))
    env._next_col.copy_(torch.tensor(columns, device=dev))
    ended = np.flatnonzero(terminated | truncated).tolist()
    if ended:
        env._active[torch.tensor(ended, device=dev)] = False
    info: dict = {}
    if ended:
        model = torch.zeros(n, dtype=torch.float32, device=dev)
        totals = turn_totals([env._episodes[i] for i in ended]) if env.turn_rules.score_turns else None
        info = env._score(ended, model, scored=totals)
        model_np = model.cpu().numpy()
        turn = np.zeros(n, dtype=np.float32)
        turns = np.zeros(n, dtype=np.float32)
        for i in ended:
            turn[i], turns[i] = env._episodes[i].turn_reward, env._episodes[i].policy_turns
        if totals is None:  # turn_reward=final: the episode's score is paid on its last step
            rewards[ended] += model_np[ended]
        mask = info["_score"]
        info["score"] = np.where(mask, model_np + turn, 0.0).astype(np.float32)
        for key, values in (("reward/model", model_np), ("reward/interaction", turn), ("turns", turns)):
            info[key], info[f"_{key}"] = np.where(mask, values, 0.0).astype(np.float32), mask.copy()
    if any(a is not None for a in appended):
        info["env_tokens"] = np.empty(n, dtype=object)
        for i, a in enumerate(appended):
            info["env_tokens"][i] = a
        info["_env_tokens"] = np.array([a is not None for a in appended])
    if env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
        was_done = [i for i in range(n) if not active[i]]
        if was_done:
            env._start(was_done, None)
    as_tensor = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    return env._obs(), as_tensor(rewards), as_tensor(terminated), as_tensor(truncated), info


def score_turns(reward_model, *, episodes: list[EpisodeTurns], pairs: list[tuple[str, str]], rewards, slots) -> None:
    """Score ``pairs`` (each ``(context, reply)`` of a policy turn that just ended) with
    ``reward_model`` in one call, record each score in its episode and add it to ``rewards[slot]``
    (``rewards``: a float numpy array; ``slots``: where each pair's reward goes).

    Raises:
        TextRLError: the reward model raised or returned bad scores (see
            :func:`~textrl.rewards.base.score_responses`).
    """
    from textrl.rewards.base import score_responses

    out = score_responses(reward_model, [c for c, _ in pairs], [r for _, r in pairs])
    scores = out.scores.tolist()
    components = {name: values.tolist() for name, values in out.components.items()}
    for k, (episode, slot) in enumerate(zip(episodes, slots)):
        details = out.details[k] if out.details is not None else None
        episode.add_turn_score(scores[k], components={name: v[k] for name, v in components.items()}, details=details)
        rewards[slot] += scores[k]


def turn_totals(episodes: list[EpisodeTurns]):
    """The :class:`~textrl.rewards.base.RewardOutput` of finished ``episodes`` whose turns were
    scored: each episode's score is the sum of its turn scores (components summed likewise;
    details ``{"turns": [each turn's details]}``)."""
    import torch

    from textrl.rewards.base import RewardOutput

    names = sorted({name for e in episodes for name in e.components})
    details = None
    if any(d is not None for e in episodes for d in e.details):
        details = [{"turns": list(e.details)} for e in episodes]
    return RewardOutput(
        torch.tensor([sum(e.turn_scores) for e in episodes], dtype=torch.float32),
        {name: torch.tensor([e.components.get(name, 0.0) for e in episodes], dtype=torch.float32) for name in names},
        details,
    )


def start_slots(env, slots, encode) -> None:
    """Reset the turn bookkeeping (and ``action_mask`` rows) of vector-env ``slots``; ``encode``
    maps a prompt to its ids."""
    for i in slots:
        prompt = env.episode_prompts[i]
        env._episodes[i] = EpisodeTurns(prompt, tuple(encode(prompt)))
    if slots:
        env._amask[list(slots)] = 0


def single_step(env, token: int):
    """:meth:`TokenGenEnv.step` with an interaction (see :func:`vector_step` for the rewards and
    ``info``: here ``info["env_tokens"]`` is the list of appended ids when there are any)."""
    from textrl.envs.token_env import decode_response
    from textrl.rewards.base import score_responses

    episode = env._episode
    col = env.max_prompt_tokens + episode.used
    env._ids[col], env._mask[col], env._amask[col] = token, 1, 1
    out = env.turn_rules.after_action(episode, token)
    for k, tid in enumerate(out.appended):
        env._ids[col + 1 + k], env._mask[col + 1 + k], env._amask[col + 1 + k] = tid, 1, 0
    env._t = episode.used
    reward, info = out.reward, {}
    if out.scored is not None:  # turn_reward=model: the turn's score now
        rewards = np.zeros(1, dtype=np.float32)
        score_turns(env.reward_model, episodes=[episode], pairs=[out.scored], rewards=rewards, slots=[0])
        reward += float(rewards[0])
    if out.appended:
        info["env_tokens"] = list(out.appended)
    if out.ended:
        env._done = True
        response = decode_response(
            env.tokenizer, env._ids[env.max_prompt_tokens : env.max_prompt_tokens + episode.used]
        )
        if env.turn_rules.score_turns:  # already paid turn by turn
            scored = turn_totals([episode])
        else:
            scored = score_responses(env.reward_model, [env._prompt], [response])
            reward += float(scored.scores[0])
        model = float(scored.scores[0])
        info.update(
            {
                "prompt": env._prompt,
                "response": response,
                "score": model + episode.turn_reward,
                "reward/model": model,
                "reward/interaction": episode.turn_reward,
                "turns": episode.policy_turns,
                **{f"reward/{k}": float(v[0]) for k, v in scored.components.items()},
            }
        )
        if scored.details is not None:
            info["reward_details"] = scored.details[0]
    return env._obs(), float(reward), out.terminated, out.truncated, info
