"""Prompt sources: where the env's prompts come from.

``load_prompts`` turns one string into a list of prompt texts:

- ``"builtin"``: the movie-review openings shipped with textrl (``textrl/data``);
- a path to ``.txt`` (one prompt per line), ``.json`` (a list of strings or of objects),
  ``.jsonl`` (one object per line) or ``.csv``; any of these may be gzipped (``.gz``);
- otherwise a Hugging Face ``datasets`` id (needs the ``datasets`` package and, for a hub id,
  network access).

``prefix_tokens=k`` then cuts every text to its first k tokens, the way TRL builds prompts from
IMDB reviews.
"""

from __future__ import annotations

import csv
import io
import json
import os
from importlib import resources
from typing import Iterable, Sequence

from textrl.errors import TextRLError
from textrl.records import first_human_turn, read_text

BUILTIN = "builtin"
TEXT_FIELDS = ("prompt", "text", "query", "instruction", "review")
_SUFFIXES = (".txt", ".json", ".jsonl", ".csv")


def builtin_prompts() -> list[str]:
    """The 80 movie-review openings written for textrl (one per line in ``textrl/data``)."""
    text = resources.files("textrl.data").joinpath("movie_review_openings.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_prompts(
    source: str | Sequence[str],
    *,
    text_field: str | None = None,
    split: str = "train",
    max_prompts: int | None = None,
    prefix_tokens: int | None = None,
    tokenizer=None,
) -> list[str]:
    """Load prompt texts from ``source`` (see the module docstring for the accepted forms).

    Args:
        source: ``"builtin"``, a file path, a ``datasets`` id, or an in-memory list of strings.
        text_field: key holding the text in json/jsonl/csv rows and dataset rows; ``None`` tries
            ``prompt``, ``text``, ``query``, ``instruction``, ``review`` in that order, and takes
            the first Human turn of hh-rlhf ``chosen`` dialogues.
        split: dataset split for a ``datasets`` id.
        max_prompts: keep only the first this many prompts (``None`` keeps all).
        prefix_tokens: cut each text to its first k tokens with ``tokenizer`` (TRL's IMDB recipe).
        tokenizer: a Hugging Face tokenizer, needed only with ``prefix_tokens``.

    Returns:
        list[str]: the prompts, stripped of surrounding whitespace, in file order.

    Raises:
        TextRLError: missing file, unreadable or empty file, rows without the text field, an
            empty result, ``prefix_tokens`` ≤ 0, or a datasets id that cannot be loaded.
    """
    if isinstance(source, str):
        texts = _read_source(source, text_field, split)
        where = source
    else:
        texts, where = [str(t) for t in source], "the prompt list"
    texts = [t.strip() for t in texts if t is not None and str(t).strip()]
    if max_prompts is not None:
        if max_prompts <= 0:
            raise TextRLError(f"data.max_prompts: got {max_prompts}; expected a positive integer or null")
        texts = texts[:max_prompts]
    if prefix_tokens is not None:
        texts = cut_to_prefix(texts, prefix_tokens, tokenizer)
    if not texts:
        raise TextRLError(f"data.prompts: {where!r} holds no prompts; expected at least one non-empty text")
    return texts


def cut_to_prefix(texts: Iterable[str], prefix_tokens: int, tokenizer) -> list[str]:
    """Keep the first ``prefix_tokens`` tokens of each text (decoded back to text).

    Raises:
        TextRLError: ``prefix_tokens`` ≤ 0 or no tokenizer given.
    """
    if prefix_tokens <= 0:
        raise TextRLError(f"data.prefix_tokens: got {prefix_tokens}; expected a positive integer or null")
    if tokenizer is None:
        raise TextRLError("data.prefix_tokens needs a tokenizer; got None")
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:prefix_tokens]
        cut = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if cut:
            out.append(cut)
    return out


def _read_source(source: str, text_field: str | None, split: str) -> list[str]:
    if source == BUILTIN:
        return builtin_prompts()
    path = os.path.expanduser(source)
    base = path[:-3] if path.endswith(".gz") else path
    if os.path.isfile(path):
        return _read_file(path, base, text_field)
    if base.endswith(_SUFFIXES) or not _looks_like_hub_id(source):
        raise TextRLError(f"data.prompts: file {source!r} does not exist; expected 'builtin', a "
                          f".txt/.json/.jsonl/.csv path or a datasets id")
    return _read_dataset(source, text_field, split)


def _looks_like_hub_id(source: str) -> bool:
    """``name`` or ``owner/name``: no leading ./, /, ~ and at most one slash."""
    return source.count("/") <= 1 and not source.startswith((".", "/", "~"))


def _read_file(path: str, base: str, text_field: str | None) -> list[str]:
    raw = read_text(path, "data.prompts")
    try:
        if base.endswith(".jsonl"):
            rows = [json.loads(line) for line in raw.split("\n") if line.strip()]  # not splitlines: \u2028 is text
        elif base.endswith(".json"):
            rows = json.loads(raw) if raw.strip() else []
            if isinstance(rows, dict):  # {"prompts": [...]} or {"data": [...]}
                rows = next((v for v in rows.values() if isinstance(v, list)), [rows])
        elif base.endswith(".csv"):
            rows = list(csv.DictReader(io.StringIO(raw)))
        else:
            return raw.splitlines()
    except json.JSONDecodeError as e:
        raise TextRLError(f"data.prompts: {path!r} is not valid JSON ({e.msg} at line {e.lineno}); "
                          f"expected {'one JSON object per line' if base.endswith('.jsonl') else 'a JSON list'}") from None
    return [_row_text(row, text_field, path) for row in rows]


def _row_text(row, text_field: str | None, where: str) -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        raise TextRLError(f"data.prompts: row {row!r} in {where!r} is a {type(row).__name__}; expected a string or an object")
    if text_field is None and isinstance(row.get("chosen"), str) and "Human:" in row["chosen"]:
        return first_human_turn(row["chosen"])  # hh-rlhf: the conversation's opening request
    if text_field is None and "instruction" in row:  # Alpaca: the instruction and its input, as SFT sees them
        return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    fields = (text_field,) if text_field else TEXT_FIELDS
    for key in fields:
        if key in row:
            return row[key]
    raise TextRLError(f"data.text_field: rows in {where!r} have keys {sorted(row)}; expected one of {list(fields)} "
                      f"(set data.text_field)")


def _read_dataset(name: str, text_field: str | None, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise TextRLError(f"data.prompts: {name!r} is not a file, and reading a datasets id needs "
                          f"`pip install datasets`") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # datasets raises many types; report one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TextRLError(f"data.prompts: cannot load {name!r} as a file or a datasets id ({first})") from None
    return [_row_text(row, text_field, name) for row in ds]
