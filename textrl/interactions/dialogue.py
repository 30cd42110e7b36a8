"""The ``dialogue`` interaction: replay the next human turn of a recorded conversation.

The data are hh-rlhf transcripts (``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", ...}``, one
JSON object per line, optionally gzipped). Each conversation's first human turn becomes a prompt
(``"\\n\\nHuman: {turn}\\n\\nAssistant:"``, see :attr:`Dialogue.prompts`); after the policy's k-th
answer, the conversation's (k+1)-th human turn is appended as a ``user`` message, and after the
last one the episode ends. So the policy answers every assistant turn with the earlier turns in
its context.
"""

from __future__ import annotations

import gzip
import json
import os
import re

from textrl.config import integer, one_of
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


class Dialogue(Interaction):
    """Replays hh-rlhf conversations' later human turns (see the module docstring).

    Args:
        path: a ``.jsonl`` or ``.jsonl.gz`` file with a ``chosen`` transcript per line.
        field: which transcript to read (``chosen`` or ``rejected``).
        min_turns: keep conversations with at least this many human turns.
        max_conversations: keep at most this many (first in the file); ``None`` = all.

    Attributes:
        prompts: the kept conversations' first-turn prompts (use them as the env's prompts).

    An episode whose prompt is not one of :attr:`prompts` ends after the first policy turn.

    Raises:
        TextRLError: the file cannot be read, or no conversation is kept.
    """

    config_checks = {
        "field": one_of("chosen", "rejected"),
        "min_turns": integer(ge=1),
        "max_conversations": integer(ge=1, optional=True),
    }

    def __init__(
        self, path: str = DEFAULT_DATA, field: str = "chosen", min_turns: int = 2, max_conversations: int | None = None
    ):
        opener = gzip.open if str(path).endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as e:
            raise TextRLError(
                f"interaction.path: cannot read {path!r} ({first_line(e)}); expected an "
                f"hh-rlhf .jsonl or .jsonl.gz file"
            ) from None
        self.followups: dict[str, list[str]] = {}
        for row in rows:
            turns = human_turns(row.get(field, "")) if isinstance(row, dict) else []
            if len(turns) >= max(min_turns, 1):
                self.followups.setdefault(hh_prompt(turns[0]), turns[1:])
            if max_conversations is not None and len(self.followups) >= max_conversations:
                break
        if not self.followups:
            raise TextRLError(
                f"interaction.path: no conversation in {path!r} has {min_turns} human turns in "
                f"{field!r}; expected hh-rlhf transcripts"
            )
        self.prompts = list(self.followups)

    def respond(self, episode: EpisodeView) -> Reply:
        """The next human turn after the policy's k-th answer, or the end of the conversation."""
        rest = self.followups.get(episode.prompt, [])
        k = episode.policy_turns
        if k > len(rest):
            return Reply.end()
        return Reply.append(self.message_ids(rest[k - 1], role="user"))
