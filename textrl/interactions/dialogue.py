"""The ``dialogue`` interaction: replay the next human turn of a recorded conversation.

The data are hh-rlhf transcripts (``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", ...}``, one
JSON object per line, optionally gzipped). Each conversation's first human turn becomes a prompt
(``"\\n\\nHuman: {turn}\\n\\nAssistant:"``, see :attr:`Dialogue.prompts`); after the policy's k-th
answer, the conversation's (k+1)-th human turn is appended as a ``user`` message, and after the
last one the episode ends. So the policy answers every assistant turn with the earlier turns in
its context.

Held-out dialogues: :func:`is_heldout` splits conversations by a hash of their first human turn
(conversations that open alike fall on the same side), so the generated dataset ``hh_dialogues``
(``hh_dialogues:train`` / ``hh_dialogues:heldout``, the rows of :data:`DEFAULT_DATA`; see
:func:`hh_dialogue_rows`) gives disjoint conversations for RL and reward-model training and for
evaluation. ``Dialogue(path="hh_dialogues:train", eval_path="hh_dialogues:heldout", sources=...)``
replays the first for ``stage=rl`` (:attr:`Dialogue.prompts`) and the second for ``stage=eval``
(:attr:`Dialogue.eval_prompts`). A generated dataset is read from the
:class:`~textrl.data_sources.DataSources` table passed as ``sources``: the stage builds it from the
plugin registry and :func:`textrl.config.build_plugin` hands it to the factory (``sources`` is no
config key), so the interaction reads no global registry.

Per-turn rewards (``env.turn_reward=model``): :meth:`Dialogue.reward_input` writes the
conversation so far in the hh-rlhf layout a reward model trained by ``stage=rm`` on hh-rlhf pairs
reads (``"\\n\\nHuman: ...\\n\\nAssistant: <reply>\\n\\nHuman: ...\\n\\nAssistant:"``), whatever
chat template the policy sees.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re

from textrl.config import integer, one_of
from textrl.data_sources import DataSources
from textrl.errors import TextRLError, first_line
from textrl.interactions.base import EpisodeView, Interaction, Reply

DEFAULT_DATA = os.path.join(
    os.environ.get("TEXTRL_ASSETS", "../shared/assets"), "hh-rlhf-harmless-test", "harmless-base-test.jsonl.gz"
)
_SPEAKER = re.compile(r"\n\n(Human|Assistant): ")


def human_turns(transcript: str) -> list[str]:
    """The human turns of an hh-rlhf transcript, in order (stripped)."""
    parts = _SPEAKER.split(transcript)
    return [parts[i + 1].strip() for i in range(1, len(parts) - 1, 2) if parts[i] == "Human"]


def hh_prompt(turn: str) -> str:
    """The hh-rlhf prompt for a first human turn."""
    return f"\n\nHuman: {turn}\n\nAssistant:"


HELDOUT_FRACTION = 0.25
"""Share of hh-rlhf conversations :func:`is_heldout` holds out for evaluation (by hash, about 25%: enough held-out pairs, over 500, to measure a reward model)."""
SPLITS = ("train", "heldout")


def is_heldout(first_turn: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether the conversation opening with human turn ``first_turn`` is held out: the first 8
    bytes of the SHA-256 of the stripped text, as a fraction of 2**64, below ``fraction``.
    Deterministic across processes and machines (no seed)."""
    digest = hashlib.sha256(first_turn.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def hh_dialogue_rows(split: str, path: str | None = None) -> list[dict]:
    """The rows (``{"chosen", "rejected"}`` transcripts) of the hh-rlhf file ``path`` (default
    :data:`DEFAULT_DATA`) whose conversations fall in ``split`` (``train`` or ``heldout``, see
    :func:`is_heldout`); the ``hh_dialogues`` generated dataset (``textrl_datasets``).

    Raises:
        ValueError: an unknown split.
        TextRLError: the file cannot be read.
    """
    if split not in SPLITS:
        raise ValueError(f"expected a split in {list(SPLITS)}")
    rows = _read_file(path or DEFAULT_DATA, "hh_dialogues")
    keep = split == "heldout"
    return [row for row in rows if is_heldout(_first_turn(row)) == keep]


def _first_turn(row) -> str:
    turns = human_turns(row.get("chosen", "")) if isinstance(row, dict) else []
    return turns[0] if turns else ""


def _read_file(path: str, key: str) -> list:
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise TextRLError(
            f"{key}: cannot read {path!r} ({first_line(e)}); expected an hh-rlhf .jsonl or .jsonl.gz file"
        ) from None


class Dialogue(Interaction):
    """Replays hh-rlhf conversations' later human turns (see the module docstring).

    Args:
        path: a ``.jsonl`` or ``.jsonl.gz`` file with a ``chosen`` transcript per line, or a
            generated dataset ``"<name>:<split>"`` held by ``sources`` (``hh_dialogues:train``).
        field: which transcript to read (``chosen`` or ``rejected``).
        min_turns: keep conversations with at least this many human turns.
        max_conversations: keep at most this many (first in the file); ``None`` = all.
        eval_path: like ``path``, the conversations ``stage=eval`` replays (``None``: none, eval
            takes the first of :attr:`prompts`); ``min_turns``, ``field`` and ``max_conversations``
            apply to them too.
        prompt_layout: ``hh`` writes a prompt ``"\\n\\nHuman: {turn}\\n\\nAssistant:"``; ``text``
            is the bare first human turn (for a chat template: ``data.prompt_format=chat`` then
            makes it a user message, as later human turns are).
        sources: the generated datasets ``path`` and ``eval_path`` may name; supplied by
            :func:`textrl.config.build_plugin` (see
            :data:`~textrl.config.plugin_options.INJECTED_KEYS`), not a config key. ``None``: only
            files.

    Attributes:
        prompts: the kept conversations' first-turn prompts (use them as the env's prompts).
        eval_prompts: the same for ``eval_path`` (empty without one).

    An episode whose prompt is not one of :attr:`prompts` or :attr:`eval_prompts` ends after the
    first policy turn.

    Raises:
        TextRLError: a file cannot be read, a ``"<name>:<split>"`` that ``sources`` does not hold,
            or no conversation is kept.
    """

    config_checks = {
        "field": one_of("chosen", "rejected"),
        "min_turns": integer(ge=1),
        "max_conversations": integer(ge=1, optional=True),
        "prompt_layout": one_of("hh", "text"),
    }

    def __init__(
        self,
        path: str = DEFAULT_DATA,
        field: str = "chosen",
        min_turns: int = 2,
        max_conversations: int | None = None,
        eval_path: str | None = None,
        prompt_layout: str = "hh",
        sources: DataSources | None = None,
    ):
        self.field, self.min_turns, self.max_conversations = field, min_turns, max_conversations
        self.prompt_layout = prompt_layout
        self.humans: dict[str, list[str]] = {}  # prompt -> every human turn of its conversation
        sources = sources or DataSources()
        self.prompts = self._load(path, "interaction.path", sources)
        self.eval_prompts = self._load(eval_path, "interaction.eval_path", sources) if eval_path else []

    @property
    def followups(self) -> dict[str, list[str]]:
        """Prompt → the human turns replayed after it (the conversation's second turn on)."""
        return {prompt: turns[1:] for prompt, turns in self.humans.items()}

    def _load(self, path: str, key: str, sources: DataSources) -> list[str]:
        rows = sources.rows(path, key)
        prompts: dict[str, None] = {}
        for row in _read_file(path, key) if rows is None else rows:
            turns = human_turns(row.get(self.field, "")) if isinstance(row, dict) else []
            if len(turns) >= max(self.min_turns, 1):
                prompt = hh_prompt(turns[0]) if self.prompt_layout == "hh" else turns[0]
                if prompt not in prompts:
                    prompts[prompt] = None
                    self.humans.setdefault(prompt, turns)
            if self.max_conversations is not None and len(prompts) >= self.max_conversations:
                break
        if not prompts:
            raise TextRLError(
                f"{key}: no conversation in {path!r} has {self.min_turns} human turns in "
                f"{self.field!r}; expected hh-rlhf transcripts"
            )
        return list(prompts)

    def respond(self, episode: EpisodeView) -> Reply:
        """The next human turn after the policy's k-th answer, or the end of the conversation."""
        rest = self.humans.get(episode.prompt, [None])[1:]
        k = episode.policy_turns
        if k > len(rest):
            return Reply.end()
        return Reply.append(self.message_ids(rest[k - 1], role="user"))

    def reward_input(self, episode: EpisodeView) -> tuple[str, str]:
        """``(context, reply)`` in the hh-rlhf layout: the k-th reply's context is the first k
        human turns with the policy's k − 1 earlier replies between them (special tokens dropped),
        ending in ``"\\n\\nAssistant:"``. An unknown prompt gets :meth:`Interaction.reward_input`'s."""
        humans = self.humans.get(episode.prompt)
        if humans is None:
            return super().reward_input(episode)
        replies = [self.reply_text(t) for t in episode.turns if t.role == "policy"]
        context = "".join(
            hh_prompt(humans[min(k, len(humans) - 1)]) + (f" {reply}" if k < len(replies) - 1 else "")
            for k, reply in enumerate(replies)
        )
        return context, replies[-1]
