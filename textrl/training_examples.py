"""Training examples for the SFT and reward-model stages (demonstrations, rankings, labelled
text), read from the common public formats, and the prompt formatting they share.

Demonstrations (``stage=sft``) become :class:`Demonstration` (prompt, response):

- ``{"prompt", "response"}`` (also ``completion``/``output``/``chosen`` as the response);
- Alpaca ``{"instruction", "input", "output"}`` (the input, when present, follows the
  instruction after a blank line);
- chat ``{"messages": [{"role", "content"}, ...]}``: the ``system`` and ``user`` messages before
  the first assistant turn are the prompt; from that turn on, the conversation is the response:
  ``assistant`` turns are the policy's (trained on), later ``user`` and ``tool`` turns the
  environment's (masked), as in a multi-turn episode (:mod:`textrl.interactions`).

Rankings (``stage=rm``) become :class:`Ranking` (prompt, K responses, ranks with 0 = best):

- K-wise ``{"prompt", "responses": [...], "ranking": [...]}``;
- pairs ``{"prompt", "chosen", "rejected"}``;
- Anthropic hh-rlhf ``{"chosen", "rejected"}``: two full dialogues sharing a prefix; the prompt
  is the dialogue up to and including the last ``"\\n\\nAssistant:"``, the responses are what
  follows it in each.

Labelled text (``stage=rm rm.objective=classification``) becomes (text, label) pairs from
``{"text", "label"}`` rows.

Sources (:func:`read_rows`): a generated dataset ``"<name>:<split>"`` from the
:class:`~textrl.data_sources.DataSources` table the stage passes as ``sources``; a
``.jsonl``/``.json`` file (optionally ``.gz``); anything else is tried as a ``datasets`` id.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

from textrl.config.choices import PROMPT_FORMATS
from textrl.data_sources import DataSources
from textrl.errors import TextRLError, first_line
from textrl.io import parse_jsonl

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"


CHAT_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the demonstrated response.

    Attributes:
        prompt: the prompt text (a chat row's user messages before the first assistant turn).
        response: the demonstrated response (a chat row's first assistant turn).
        turns: a chat row's ``(role, content)`` pairs from the first assistant turn on, when there
            is more than that one turn (a multi-turn demonstration); else empty.
        system: a chat row's system message before the first assistant turn, or ``None``.
    """

    prompt: str
    response: str
    turns: tuple[tuple[str, str], ...] = ()
    system: str | None = None


@dataclass(frozen=True)
class Ranking:
    """A prompt, K responses and their ranks (0 = best; equal ranks are ties)."""

    prompt: str
    responses: tuple[str, ...]
    ranks: tuple[int, ...]


def format_prompt(tokenizer, prompt: str, prompt_format: str = "auto", system: str | None = None) -> str:
    """The text the model sees before its response.

    ``none``: the prompt as is (continuation tasks); ``chat``: the tokenizer's chat template
    with one user turn (after a ``system`` message when ``system`` is given) and the assistant
    header; ``plain``: ``prompt + "\n"`` (after ``system + "\n\n"``); ``auto``: chat if the
    tokenizer has a template, else plain. ``system`` is ignored with ``none``.

    Raises:
        TextRLError: unknown format, or ``chat`` with a tokenizer that has no chat template.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise TextRLError(f"prompt_format: got {prompt_format!r}; expected one of {list(PROMPT_FORMATS)}")
    if prompt_format == "none":
        return prompt
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise TextRLError("prompt_format: got 'chat' but the tokenizer has no chat template; expected auto or plain")
    if prompt_format in ("chat", "auto") and has_template:
        messages = [{"role": "system", "content": system}] if system else []
        return tokenizer.apply_chat_template(
            messages + [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return (f"{system}\n\n" if system else "") + prompt + "\n"


def read_text(path: str, key: str = "data file") -> str:
    """The whole text of ``path`` (gunzipped when it ends in ``.gz``).

    Raises:
        TextRLError: unreadable, not UTF-8, or a damaged gzip stream; the message names ``key``
            and the path.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        reason = first_line(e) or type(e).__name__
        raise TextRLError(
            f"{key}: cannot read {path!r} ({reason}); expected a UTF-8 text file"
            f"{' (gzip-compressed)' if path.endswith('.gz') else ''}"
        ) from None


def read_rows(
    source: str, split: str = "train", key: str = "data", *, sources: DataSources | None = None
) -> list[dict]:
    """Rows of a generated dataset (``"<name>:<split>"`` held by ``sources``, see
    :func:`textrl.hookspecs.textrl_datasets`), a ``.jsonl``/``.json`` file (optionally gzipped) or
    a ``datasets`` id.

    Args:
        source: the data source string (``sft.data``, ``rm.data``...).
        split: the split of a ``datasets`` id.
        key: the config key ``source`` came from, named in the errors.
        sources: the generated datasets (``None``: none, only files and ``datasets`` ids).

    Raises:
        TextRLError: a missing or unreadable file, invalid JSON, a datasets id that cannot be
            loaded, or a ``"<name>:<split>"`` that ``sources`` does not hold (see
            :meth:`DataSources.rows`); the message names ``key``.
    """
    generated = (sources or DataSources()).rows(source, key)
    if generated is not None:
        return generated
    path = os.path.expanduser(source)
    base = path[:-3] if path.endswith(".gz") else path
    if os.path.isfile(path):
        text = read_text(path, key)
        try:
            if base.endswith(".jsonl"):
                return parse_jsonl(text, source=path)
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise TextRLError(
                f"{key}: {source!r} is not valid JSON ({e.msg} at line {e.lineno}); "
                f"expected {'one JSON object per line' if base.endswith('.jsonl') else 'a JSON list'}"
            ) from None
        return rows if isinstance(rows, list) else next((v for v in rows.values() if isinstance(v, list)), [rows])
    if base.endswith((".jsonl", ".json")) or source.startswith((".", "/", "~")):
        raise TextRLError(f"{key}: file {source!r} does not exist; expected a .jsonl/.json path or a datasets id")
    try:
        import datasets

        return list(datasets.load_dataset(source, split=split))
    except Exception as e:  # datasets raises many types; report one line
        first = first_line(e) or type(e).__name__
        raise TextRLError(f"{key}: cannot load {source!r} as a file or a datasets id ({first})") from None


def to_demonstration(row: dict[str, Any]) -> Demonstration:
    """One demonstration from a prompt/response, Alpaca or chat-messages row.

    Raises:
        TextRLError: a row in none of these formats (its keys are named), a chat row without an
            assistant turn or with a role other than system/user/assistant/tool.
    """
    if "messages" in row:
        messages = [(m.get("role"), m.get("content", "")) for m in row["messages"]]
        roles = [role for role, _ in messages]
        if any(role not in CHAT_ROLES for role in roles) or "assistant" not in roles:
            raise TextRLError(
                f"chat row has roles {roles}; expected {list(CHAT_ROLES)} with at least one assistant turn"
            )
        first = roles.index("assistant")
        prompt = "\n".join(text for role, text in messages[:first] if role != "system")
        system = "\n".join(text for role, text in messages[:first] if role == "system") or None
        turns = tuple(messages[first:]) if len(messages) > first + 1 else ()
        return Demonstration(prompt, messages[first][1], turns, system)
    if "instruction" in row:
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return Demonstration(prompt, row.get("output", ""))
    for key in ("response", "completion", "output", "chosen"):
        if "prompt" in row and key in row:
            return Demonstration(row["prompt"], row[key])
    raise TextRLError(
        f"demonstration row has keys {sorted(row)}; expected prompt/response, "
        f"instruction/input/output (Alpaca) or messages"
    )


def split_dialogue(text: str) -> tuple[str, str]:
    """hh-rlhf: ``(prompt up to and including the last "\\n\\nAssistant:", the reply after it)``."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise TextRLError(f"dialogue {text[:60]!r}... has no {ASSISTANT.strip()!r} turn")
    cut += len(ASSISTANT)
    return text[:cut], text[cut:].strip()


def first_human_turn(dialogue: str) -> str:
    """hh-rlhf: the text of the first ``"Human:"`` turn of a dialogue (a single-turn prompt).

    Raises:
        TextRLError: the dialogue has no Human turn.
    """
    start = dialogue.find(HUMAN)
    if start < 0:
        raise TextRLError(f"dialogue {dialogue[:60]!r}... has no {HUMAN.strip()!r} turn")
    start += len(HUMAN)
    end = dialogue.find(ASSISTANT, start)
    return dialogue[start : end if end >= 0 else None].strip()


def split_dialogue_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """hh-rlhf: the shared dialogue up to and including its last ``"\n\nAssistant:"`` is the prompt;
    what follows in each dialogue is that response (usually one turn; more where the two
    dialogues diverged earlier).

    Raises:
        TextRLError: the dialogues share no Assistant turn.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise TextRLError(f"hh-rlhf row: dialogues {chosen[:40]!r}... share no {ASSISTANT.strip()!r} turn")
    cut += len(ASSISTANT)
    return chosen[:cut], chosen[cut:].strip(), rejected[cut:].strip()


def to_ranking(row: dict[str, Any]) -> Ranking:
    """One ranking from a K-wise, pairwise or hh-rlhf row.

    Raises:
        TextRLError: an unknown format, a ranking of the wrong length, or hh-rlhf dialogues
            whose prompts differ.
    """
    if "responses" in row:
        responses, ranks = (
            tuple(row["responses"]),
            tuple(int(r) for r in row.get("ranking", range(len(row["responses"])))),
        )
        if len(ranks) != len(responses):
            raise TextRLError(
                f"ranking {list(ranks)} has {len(ranks)} entries; expected one per response ({len(responses)})"
            )
        return Ranking(row["prompt"], responses, ranks)
    if "chosen" in row and "rejected" in row:
        if "prompt" in row:
            return Ranking(row["prompt"], (row["chosen"], row["rejected"]), (0, 1))
        prompt, chosen, rejected = split_dialogue_pair(row["chosen"], row["rejected"])
        return Ranking(prompt, (chosen, rejected), (0, 1))
    raise TextRLError(
        f"preference row has keys {sorted(row)}; expected prompt/responses/ranking, "
        f"prompt/chosen/rejected or chosen/rejected dialogues (hh-rlhf)"
    )


def to_labelled(rows: Iterable[dict[str, Any]], text_field: str = "text", label_field: str = "label"):
    """``(texts, labels)`` from classification rows.

    Raises:
        TextRLError: a row without the text or label field.
    """
    texts, labels = [], []
    for row in rows:
        if text_field not in row or label_field not in row:
            raise TextRLError(f"classification row has keys {sorted(row)}; expected {text_field!r} and {label_field!r}")
        texts.append(row[text_field])
        labels.append(int(row[label_field]))
    return texts, labels
