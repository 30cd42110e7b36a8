"""The episode model both token envs run: a single-turn episode is a multi-turn episode with no
interaction.

::

    reset ─▶ [prompt] ─▶ policy turn (one sampled token per step) ─▶ turn ends ─▶ interaction
                              ▲                                                   │
                              └──── env tokens appended (action_mask 0) ◀─────────┤ Reply.append
                                         no interaction, Reply.end ─▶ episode ends (terminated)

A policy turn ends at one of the policy's end tokens (EOS and the
chat template's end-of-turn token, :func:`~textrl.interactions.base.end_of_turn_id`, with
``stop_on_eos``) or when the decoded text of the turn so far contains one of the interaction's
``stop_strings`` (a stop string ending inside a token ends the turn at that token; the ids are
decoded for this check only, never re-encoded). Without an interaction the episode then ends
(``terminated``); with one, :meth:`~textrl.interactions.base.Interaction.respond` decides.

Budgets, each of which truncates the episode (it is then scored as usual): ``max_new_tokens``
policy tokens per turn, ``max_turns`` policy turns (an interaction that still returns tokens after
the last one), ``max_episode_tokens`` tokens after the prompt, policy and env tokens together (env
tokens that would leave no room for one more policy token). Without an interaction an episode is
one turn of at most ``max_new_tokens`` tokens.

Rewards (``turn_reward``, :data:`~textrl.config.choices.TURN_REWARDS`), each paid on the step that
earns it: an interaction's turn reward (``Reply.reward``) on the step that ends the turn;
``final`` (the default): the reward model's score of (prompt, every token after it decoded) on the
episode's last step; ``model``: the reward model's score of each policy turn in context (the pair
:meth:`~textrl.interactions.base.Interaction.reward_input` writes) on the step that ends the turn,
nothing more at the end. An episode's rewards sum to its ``score``.

Faults never crash the episode: an interaction that raises, returns something that is not a
:class:`~textrl.interactions.base.Reply`, no ids or ids outside the vocabulary, or a non-finite
reward gives the policy an error message instead (``Interaction.error_ids``); if even that fails,
the episode is truncated. A tool that raises ``SystemExit`` stops the run with one error line; one
that raises ``KeyboardInterrupt`` stops it the way Ctrl-C does.

Nothing here knows about tensors or slots: :class:`EpisodeRules` works on one :class:`Episode` at a
time, and the envs call it only where a turn or an episode ends (the vector env checks end tokens
and budgets for all slots at once with the same :meth:`EpisodeRules.ends_turn` and
:meth:`EpisodeRules.turn_budget`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from textrl.config.checks import episode_budget
from textrl.errors import TextRLError
from textrl.interactions.base import EpisodeView, Interaction, Reply, Turn, check_stop_strings, end_of_turn_id
from textrl.rewards.base import RewardOutput, score_responses

log = logging.getLogger(__name__)


@dataclass
class Episode:
    """One episode's state on the host.

    Attributes:
        prompt: raw prompt text; prompt_ids: its ids in the state.
        turns: finished turns, policy and env alternating.
        current: ids of the policy turn in progress, kept token by token only when the rules check
            text (:attr:`EpisodeRules.checks_text`); the envs otherwise read a turn's ids from
            their buffers when it ends.
        used: tokens after the prompt when the current policy turn started (policy + env).
        policy_turns: finished policy turns.
        turn_reward: sum of the interaction's turn rewards so far.
        turn_scores: the reward model's score of each policy turn so far (``turn_reward=model``).
        components: per component of a composite reward model, the sum of its turn scores.
        details: the reward model's explanation of each scored turn (``None`` where it gives none).
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

    def view(self) -> EpisodeView:
        """The :class:`EpisodeView` an interaction sees."""
        return EpisodeView(self.prompt, self.prompt_ids, tuple(self.turns))


@dataclass
class TurnOutcome:
    """What the end of a policy turn did: ``appended`` env ids, ``reward`` (the interaction's turn
    reward) and ``score`` (the reward model's score of the turn, set by
    :meth:`EpisodeRules.score_turns_of`), both paid on the step that ended the turn,
    ``terminated``/``truncated`` the episode; ``scored`` is the ``(context, reply)`` pair the reward
    model scores when turns are scored (``turn_reward=model``), else ``None``."""

    appended: list[int] = field(default_factory=list)
    reward: float = 0.0
    score: float = 0.0
    terminated: bool = False
    truncated: bool = False
    scored: tuple[str, str] | None = None

    @property
    def ended(self) -> bool:
        """The episode is over."""
        return self.terminated or self.truncated


class EpisodeRules:
    """The episode machine of the module docstring, for one env's settings.

    Args (keyword-only):
        tokenizer: the env's tokenizer.
        reward_model: ``callable(prompts, responses) -> FloatTensor[B]`` (see :class:`textrl.RewardModel`).
        vocab_size: env ids must lie in ``[0, vocab_size)``.
        max_new_tokens: policy tokens per turn.
        eos_id: the EOS id (``None``: the policy's end tokens end nothing, ``stop_on_eos=false``).
        interaction: a :class:`textrl.Interaction`, or ``None`` for single-turn episodes.
        max_turns, max_episode_tokens, turn_reward: see :func:`~textrl.config.checks.episode_budget`.

    Attributes:
        max_episode_tokens: tokens after the prompt per episode (the observation is
            ``max_prompt_tokens + max_episode_tokens`` wide).
        end_ids: ids that end a policy turn.
        checks_text: a turn can also end at a stop string (the envs then keep :attr:`Episode.current`).
        appends_tokens: the env can append tokens after an action (an interaction is set).

    Raises:
        TextRLError: bad budgets (:func:`~textrl.config.checks.episode_budget`), an ``interaction`` that is not an
            :class:`Interaction` or whose ``stop_strings`` is not a tuple or list of non-empty strings.
    """

    def __init__(
        self,
        *,
        tokenizer,
        reward_model,
        vocab_size: int,
        max_new_tokens: int,
        eos_id: int | None,
        interaction: Interaction | None = None,
        max_turns: int = 1,
        max_episode_tokens: int | None = None,
        turn_reward: str = "final",
    ):
        if interaction is not None and not isinstance(interaction, Interaction):
            raise TextRLError(f"interaction: got {type(interaction).__name__}; expected a textrl.Interaction")
        self.max_episode_tokens = episode_budget(
            has_interaction=interaction is not None,
            max_new_tokens=max_new_tokens,
            max_turns=max_turns,
            max_episode_tokens=max_episode_tokens,
            turn_reward=turn_reward,
        )
        self.tokenizer, self.reward_model, self.interaction = tokenizer, reward_model, interaction
        self.vocab_size, self.max_new_tokens, self.max_turns = vocab_size, max_new_tokens, max_turns
        self.score_turns = turn_reward == "model"
        eot = end_of_turn_id(tokenizer) if eos_id is not None else None
        self.end_ids = tuple(dict.fromkeys(i for i in (eos_id, eot) if i is not None))
        self.stop_strings: tuple[str, ...] = ()
        if interaction is not None:
            interaction.setup(tokenizer)
            self.stop_strings = check_stop_strings(interaction)
        self.checks_text = bool(self.stop_strings)
        self.appends_tokens = interaction is not None

    def ends_turn(self, tokens):
        """Whether each token just sampled is one of the policy's end tokens (:attr:`end_ids`).

        Works elementwise on a Python int, a numpy array or a torch tensor alike (the single env
        passes an int, the vector env the ``(N,)`` tensor of all slots' tokens).
        """
        hit = tokens == self.end_ids[0] if self.end_ids else tokens != tokens
        for other in self.end_ids[1:]:
            hit = hit | (tokens == other)
        return hit

    def turn_budget(self, used: int) -> int:
        """Tokens after the prompt at which a policy turn that starts after ``used`` of them reaches
        a budget: its ``max_new_tokens`` or the episode's ``max_episode_tokens``."""
        return min(used + self.max_new_tokens, self.max_episode_tokens)

    def stop_hit(self, episode: Episode, token: int) -> bool:
        """Add ``token`` to ``episode.current``; whether the turn's text now holds a stop string."""
        episode.current.append(token)
        text = self.tokenizer.decode(episode.current, skip_special_tokens=False)
        return any(s in text for s in self.stop_strings)

    def close_turn(self, episode: Episode, ids: list[int], *, by_policy: bool) -> TurnOutcome:
        """End the policy turn of ``ids`` (every token after ``episode.used``); ``by_policy``: it
        ended at an end token or a stop string, else at a budget (the episode is truncated). Asks
        the interaction (if any) what comes next and applies the budgets to its reply.

        Raises:
            TextRLError: the interaction raised ``SystemExit``.
        """
        episode.turns.append(Turn("policy", tuple(ids), self.tokenizer.decode(ids, skip_special_tokens=False)))
        episode.current, episode.used = [], episode.used + len(ids)
        episode.policy_turns += 1
        scored = self._reward_input(episode) if self.score_turns else None
        if not by_policy:
            return TurnOutcome(truncated=True, scored=scored)
        if self.interaction is None:
            return TurnOutcome(terminated=True, scored=scored)
        reply = self._ask(episode)
        if reply is None:  # even the error message failed
            return TurnOutcome(truncated=True, scored=scored)
        reward = float(reply.reward or 0.0)
        episode.turn_reward += reward
        if reply.done:
            return TurnOutcome(reward=reward, terminated=True, scored=scored)
        new = list(reply.ids)
        if episode.policy_turns >= self.max_turns or episode.used + len(new) + 1 > self.max_episode_tokens:
            return TurnOutcome(reward=reward, truncated=True, scored=scored)
        episode.used += len(new)
        episode.turns.append(Turn("env", tuple(new), self.tokenizer.decode(new, skip_special_tokens=False)))
        return TurnOutcome(appended=new, reward=reward, scored=scored)

    def score_turns_of(self, closed: list[tuple[Episode, TurnOutcome]]) -> None:
        """Score every ``(episode, outcome)`` whose ``outcome.scored`` is set in one reward call,
        record each score in its episode and in ``outcome.score``.

        Raises:
            TextRLError: the reward model raised or returned bad scores (see
                :func:`~textrl.rewards.base.score_responses`).
        """
        pending = [(e, o) for e, o in closed if o.scored is not None]
        if not pending:
            return
        out = score_responses(self.reward_model, [o.scored[0] for _, o in pending], [o.scored[1] for _, o in pending])
        components = {name: values.tolist() for name, values in out.components.items()}
        for k, (episode, outcome) in enumerate(pending):
            score = float(out.scores[k])
            episode.turn_scores.append(score)
            for name, values in components.items():
                episode.components[name] = episode.components.get(name, 0.0) + float(values[k])
            episode.details.append(out.details[k] if out.details is not None else None)
            outcome.score = score

    def finish(self, episodes: list[Episode], responses: list[str]) -> tuple[list[float], list[dict]]:
        """Score finished ``episodes`` (``responses``: every token after each prompt decoded, special
        tokens dropped) in one reward call; returns the reward each is paid on its last step (the
        score with ``turn_reward=final``, 0.0 with ``model``: its turns were paid) and each one's
        info: ``prompt``, ``response``, ``score`` (reward model + interaction turn rewards),
        ``reward/<component>``, ``reward_details`` when the reward model explains itself, and with an
        interaction ``reward/model``, ``reward/interaction`` (the two parts of ``score``) and
        ``turns`` (policy turns).

        Raises:
            TextRLError: the reward model raised or returned bad scores.
        """
        if self.score_turns:
            out, paid = turn_totals(episodes), [0.0] * len(episodes)
        else:
            out = score_responses(self.reward_model, [e.prompt for e in episodes], responses)
            paid = out.scores.tolist()
        model = out.scores.detach().cpu().numpy()  # a reward model on a GPU scores there
        infos = []
        for k, (episode, response) in enumerate(zip(episodes, responses)):
            score = model[k] + np.float32(episode.turn_reward)  # float32, as the reward model's scores
            info = {"prompt": episode.prompt, "response": response, "score": score}
            info.update({f"reward/{name}": values[k].item() for name, values in out.components.items()})
            if out.details is not None:
                info["reward_details"] = out.details[k]
            if self.interaction is not None:
                info.update({"reward/model": model[k], "reward/interaction": episode.turn_reward})
                info["turns"] = episode.policy_turns
            infos.append(info)
        return paid, infos

    # -- internals -----------------------------------------------------------------------------
    def _reward_input(self, episode: Episode) -> tuple[str, str]:
        try:
            context, reply = self.interaction.reward_input(episode.view())
            return str(context), str(reply)
        except Exception as e:  # the interaction's failure is the episode's: score the bare turn
            log.warning("interaction %s: reward_input raised %s: %s", self._name(), type(e).__name__, e)
            return episode.prompt, self.tokenizer.decode(list(episode.turns[-1].ids), skip_special_tokens=True).strip()

    def _ask(self, episode: Episode) -> Reply | None:
        try:
            reply = self.interaction.respond(episode.view())
            problem = self._problem(reply)
        except SystemExit as e:
            raise TextRLError(
                f"interaction {self._name()}: respond() raised SystemExit({e.code!r}); expected a textrl.Reply "
                f"(a tool must not exit the process)"
            ) from None
        except KeyboardInterrupt:
            problem = self._interrupted()
        except Exception as e:  # a tool's failure is the episode's, never the run's
            problem = f"{type(e).__name__}: {e}"
        if problem is None:
            return reply
        log.warning("interaction %s: %s", self._name(), problem)
        try:
            ids = [int(i) for i in self.interaction.error_ids(problem)]
            return Reply.append(ids) if ids and all(0 <= i < self.vocab_size for i in ids) else None
        except Exception:
            return None

    def _interrupted(self) -> str:
        """A tool's ``KeyboardInterrupt``: one error line, then the Ctrl-C path (a SIGINT to this
        process: a training stage stops at the update boundary with a checkpoint)."""
        print(
            f"textrl: error: interaction {self._name()}: respond() raised KeyboardInterrupt; stopping", file=sys.stderr
        )
        os.kill(os.getpid(), signal.SIGINT)
        return "KeyboardInterrupt"

    def _problem(self, reply) -> str | None:
        if not isinstance(reply, Reply):
            return f"respond() returned {type(reply).__name__}; expected a textrl.Reply"
        if reply.reward is not None and not (isinstance(reply.reward, (int, float)) and math.isfinite(reply.reward)):
            return f"reward {reply.reward!r} is not a finite number"
        if reply.ids is not None and not reply.ids:
            return "empty Reply.append; expected at least one id"
        if reply.ids is not None and any(not isinstance(i, int) or not 0 <= i < self.vocab_size for i in reply.ids):
            return f"ids outside the vocabulary [0, {self.vocab_size})"
        return None

    def _name(self) -> str:
        return type(self.interaction).__name__


def turn_totals(episodes: list[Episode]) -> RewardOutput:
    """The :class:`~textrl.rewards.base.RewardOutput` of finished ``episodes`` whose turns were
    scored: each episode's score is the sum of its turn scores (components summed likewise;
    details ``{"turns": [each turn's details]}``)."""
    names = sorted({name for e in episodes for name in e.components})
    details = None
    if any(d is not None for e in episodes for d in e.details):
        details = [{"turns": list(e.details)} for e in episodes]
    return RewardOutput(
        torch.tensor([sum(e.turn_scores) for e in episodes], dtype=torch.float32),
        {name: torch.tensor([e.components.get(name, 0.0) for e in episodes], dtype=torch.float32) for name in names},
        details,
    )
