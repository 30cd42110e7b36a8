"""The interaction contract: what the environment says between the policy's turns.

A multi-turn episode alternates policy turns (tokens the policy samples, one per env step) and
environment turns (token ids an :class:`Interaction` returns: a tool's result, the next user
message). When a policy turn ends (EOS, the chat template's end-of-turn token, or one of the
interaction's ``stop_strings``), the env calls :meth:`Interaction.respond` with an
:class:`EpisodeView` of the episode so far and acts on the :class:`Reply`:

- ``Reply.end(reward=...)``: the episode ends (``terminated``); the reward model scores it;
- ``Reply.append(ids, reward=...)``: ``ids`` are appended to the state as observation tokens
  (``action_mask`` 0) and the policy starts its next turn.

``reward`` (optional) is paid on the env step that ended the policy turn. The ids an interaction
returns are used exactly as given: nothing the policy sampled is decoded and re-encoded, so the
token ids trained on are the ids sampled plus the ids returned. :func:`message_ids` wraps a text in
the tokenizer's chat-template delimiters and encodes it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from textrl.errors import TextRLError

ROLES = ("user", "tool")
# end-of-turn tokens of common chat templates (ChatML, Llama 3, Gemma, Phi-3)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")
_SENTINEL = "\x00TEXTRL_MESSAGE\x00"
_ANSWER = "\x00TEXTRL_ANSWER\x00"


@dataclass(frozen=True)
class Turn:
    """One turn of an episode.

    Attributes:
        role: ``"policy"`` (tokens the policy sampled) or ``"env"`` (tokens an interaction returned).
        ids: the turn's token ids, exactly as they are in the state.
        text: ``ids`` decoded (special tokens kept), for reading only.
    """

    role: str
    ids: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class EpisodeView:
    """The episode so far, as an interaction sees it.

    Attributes:
        prompt: the raw prompt string (before any ``format_prompt``).
        prompt_ids: the prompt's token ids in the state.
        turns: every finished turn in order, policy and env alternating, the last one the policy
            turn that just ended.
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    turns: tuple[Turn, ...]

    @property
    def last(self) -> Turn:
        """The policy turn that just ended."""
        return self.turns[-1]

    @property
    def policy_turns(self) -> int:
        """Number of policy turns so far (≥ 1 when :meth:`Interaction.respond` is called)."""
        return sum(t.role == "policy" for t in self.turns)


@dataclass(frozen=True)
class Reply:
    """An interaction's answer: end the episode (``ids is None``) or append ``ids``.

    Attributes:
        ids: token ids to append (ints in ``[0, vocab_size)``), or ``None`` to end the episode.
        reward: optional reward (float, finite) for the policy turn that just ended.
    """

    ids: tuple[int, ...] | None = None
    reward: float | None = None

    @classmethod
    def end(cls, reward: float | None = None) -> "Reply":
        """End the episode (the reward model then scores it), with an optional turn reward."""
        return cls(None, reward)

    @classmethod
    def append(cls, ids: Sequence[int], reward: float | None = None) -> "Reply":
        """Append ``ids`` (at least one) to the state and let the policy take its next turn; an
        empty ``ids`` is a faulty reply (the policy gets an error message instead)."""
        return cls(tuple(int(i) for i in ids), reward)

    @property
    def done(self) -> bool:
        """Whether the reply ends the episode."""
        return self.ids is None


class Interaction:
    """Base class of interactions (subclass it and implement :meth:`respond`).

    Class attributes:
        stop_strings: strings that end a policy turn when the decoded text of the current turn
            contains one (e.g. a tool call's closing tag ``"</calc>"``); a stop string that ends
            inside a token ends the turn at that token.
        branchable: an episode may be branched (:meth:`~textrl.envs.TokenGenVectorEnv.branch`:
            Monte Carlo values, same-state groups) because :meth:`respond` is a function of the
            :class:`EpisodeView` alone; an interaction that keeps state per episode sets it false.

    The env calls :meth:`setup` once with its tokenizer, then :meth:`respond` after every policy
    turn. ``respond`` should be a function of the :class:`EpisodeView` (the same interaction object
    serves every slot of a vector env). An exception it raises, or a return value that is not a
    :class:`Reply`, becomes an error message to the policy (see :mod:`textrl.envs.episode`).
    """

    stop_strings: tuple[str, ...] = ()
    branchable: bool = True
    tokenizer = None

    def setup(self, tokenizer) -> None:
        """Receive the env's tokenizer (a Hugging Face tokenizer)."""
        self.tokenizer = tokenizer

    def respond(self, episode: EpisodeView) -> Reply:
        """Answer the policy turn that just ended (``episode.last``).

        Raises:
            NotImplementedError: in the base class.
        """
        raise NotImplementedError

    def reward_input(self, episode: EpisodeView) -> tuple[str, str]:
        """``(context, reply)``: what the reward model scores for the policy turn that just ended
        (``episode.last``) when the env pays a reward per turn (``env.turn_reward=model``).

        ``context`` is the conversation before the reply: here the raw prompt, a space and the
        earlier turns' ids decoded together (special tokens dropped, stripped); ``reply`` is the
        turn's text, special tokens dropped and stripped. Override it to write the conversation the
        way the reward model was trained to read it (:class:`~textrl.interactions.dialogue.Dialogue`
        writes the hh-rlhf layout)."""
        ids = [i for t in episode.turns[:-1] for i in t.ids]
        earlier = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return " ".join(part for part in (episode.prompt, earlier) if part), self.reply_text(episode.last)

    def reply_text(self, turn: Turn) -> str:
        """A policy turn's text for a reward model: its ids decoded, special tokens dropped, stripped."""
        return self.tokenizer.decode(list(turn.ids), skip_special_tokens=True).strip()

    def message_ids(self, text: str, role: str = "user") -> list[int]:
        """``text`` as a ``role`` message in the tokenizer's chat template, encoded once (see
        :func:`message_ids`)."""
        return message_ids(self.tokenizer, text, role)

    def error_ids(self, message: str) -> list[int]:
        """The ids of an error message for the policy (a ``tool`` message ``error: <message>``)."""
        return self.message_ids(f"error: {message}", role="tool")


def check_stop_strings(interaction) -> tuple[str, ...]:
    """``interaction.stop_strings`` as a tuple.

    Raises:
        TextRLError: it is not a tuple or list of non-empty strings (a bare string such as
            ``"</rev>"`` would otherwise become one stop string per character).
    """
    value = getattr(interaction, "stop_strings", ())
    if not isinstance(value, (tuple, list)) or not all(isinstance(s, str) and s for s in value):
        raise TextRLError(
            f"interaction {type(interaction).__name__}: stop_strings: got {value!r}; expected a tuple or list "
            f"of non-empty strings, e.g. ('</calc>',)"
        )
    return tuple(value)


def end_of_turn_id(tokenizer) -> int | None:
    """The id of the tokenizer's chat end-of-turn token (``<|im_end|>``, ``<|eot_id|>``,
    ``<end_of_turn>``, ``<|end|>``), or ``None`` when it has none."""
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            return int(vocab[token])
    return None


_DELIMITERS: dict[tuple[int, str], tuple[str, str]] = {}


def _template_delimiters(tokenizer, role: str) -> tuple[str, str]:
    """(prefix, suffix) around a ``role`` message that follows an assistant turn, read from the
    chat template: the text the template puts after the assistant's end-of-turn token, the
    message's header, and after it the next assistant header (generation prompt)."""
    key = (id(tokenizer), role)
    if key not in _DELIMITERS:
        base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _ANSWER}]
        before = tokenizer.apply_chat_template(base, tokenize=False)
        after = tokenizer.apply_chat_template(
            base + [{"role": role, "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        end = before.index(_ANSWER) + len(_ANSWER)
        if not after.startswith(before[:end]):
            raise ValueError("chat template renders earlier turns differently when a message follows")
        tail = after[end:]  # the assistant turn's end, then the new message
        eot = end_of_turn_id(tokenizer)
        eot_text = tokenizer.convert_ids_to_tokens(eot) if eot is not None else tokenizer.eos_token
        if eot_text and tail.startswith(eot_text):
            tail = tail[len(eot_text) :]  # the policy emits the end-of-turn token itself
        prefix, suffix = tail.split(_SENTINEL)
        _DELIMITERS[key] = (prefix, suffix)
    return _DELIMITERS[key]


def message_ids(tokenizer, text: str, role: str = "user") -> list[int]:
    """Token ids of ``text`` as a ``role`` (``user`` or ``tool``) message after a policy turn.

    With a chat template, the message is wrapped in the template's delimiters (what the template
    renders after the assistant's end-of-turn token, and the next assistant header); a template
    without a ``tool`` role is asked for a ``user`` message instead. Without one, the hh-rlhf
    layout: ``"\\n\\nHuman: {text}\\n\\nAssistant:"`` for ``user``, ``"\\n<result>{text}</result>\\n"``
    for ``tool``. The string is encoded once, without added special tokens.

    Raises:
        ValueError: ``role`` is not ``user`` or ``tool``.
    """
    if role not in ROLES:
        raise ValueError(f"role: got {role!r}; expected one of {ROLES}")
    if getattr(tokenizer, "chat_template", None):
        for r in (role, "user"):
            try:
                prefix, suffix = _template_delimiters(tokenizer, r)
                break
            except Exception:  # a template without this role raises from inside jinja
                continue
        else:
            prefix, suffix = _plain_delimiters(role)
    else:
        prefix, suffix = _plain_delimiters(role)
    return list(tokenizer(prefix + text + suffix, add_special_tokens=False)["input_ids"])


def _plain_delimiters(role: str) -> tuple[str, str]:
    return ("\n\nHuman: ", "\n\nAssistant:") if role == "user" else ("\n<result>", "</result>\n")
