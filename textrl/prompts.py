"""Prompt sources: where the env's prompts come from.

``load_prompts`` turns one string into a list of prompt texts:

- ``"builtin"``: the movie-review openings shipped with textrl (``textrl/data``);
- ``"<name>:<split>"``: a dataset generated in code (``textrl_datasets`` hook, e.g.
  ``arithmetic:train``), looked up in the :class:`~textrl.data_sources.DataSources` table passed
  as ``sources`` (the stage builds it from the plugin registry);
- a path to ``.txt`` (one prompt per line), ``.json`` (a list of strings or of objects),
  ``.jsonl`` (one object per line) or ``.csv``; any of these may be gzipped (``.gz``);
- otherwise a Hugging Face ``datasets`` id (needs the ``datasets`` package and, for a hub id,
  network access).

``prefix_tokens=k`` then cuts every text to its first k tokens; ``prefix_tokens=[lo, hi]`` cuts
each text to its first k tokens with k drawn uniformly from lo..hi (inclusive, seeded), the way
TRL's gpt2-sentiment builds prompts from IMDB reviews (``LengthSampler(2, 8)``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
from importlib import resources
from typing import Iterable, Sequence

from textrl.data_sources import DataSources
from textrl.errors import TextRLError, first_line
from textrl.io import parse_jsonl
from textrl.training_examples import first_human_turn, read_text

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
    prefix_tokens: int | Sequence[int] | None = None,
    tokenizer=None,
    sample: int | None = None,
    seed: int = 0,
    sources: DataSources | None = None,
) -> list[str]:
    """Load prompt texts from ``source`` (see the module docstring for the accepted forms).

    Args:
        source: ``"builtin"``, a file path, a ``datasets`` id, or an in-memory list of strings.
        text_field: key holding the text in json/jsonl/csv rows and dataset rows; ``None`` tries
            ``prompt``, ``text``, ``query``, ``instruction``, ``review`` in that order, and takes
            the first Human turn of hh-rlhf ``chosen`` dialogues.
        split: dataset split for a ``datasets`` id.
        max_prompts: keep only the first this many prompts (``None`` keeps all).
        prefix_tokens: cut each text to its first k tokens with ``tokenizer`` (TRL's IMDB recipe);
            ``k`` or ``[lo, hi]`` (k drawn per text from lo..hi inclusive, seeded by ``seed``).
        tokenizer: a Hugging Face tokenizer, needed only with ``prefix_tokens``.
        sample: draw this many texts at random (seeded by ``seed``, without replacement) after
            ``max_prompts`` and before cutting; all of them when there are fewer. ``None`` keeps
            every text in file order.
        seed: seeds ``sample`` and the prefix lengths; the same seed gives the same prompts.
        sources: the generated datasets ``"<name>:<split>"`` reads (``None``: none, only files
            and ``datasets`` ids).

    Returns:
        list[str]: the prompts, stripped of surrounding whitespace, in file order (or in the
        drawn order with ``sample``).

    Raises:
        TextRLError: missing file, unreadable or empty file, rows without the text field, an
            empty result, a bad ``prefix_tokens`` (≤ 0, or a range that is not ``[lo, hi]`` with
            1 ≤ lo ≤ hi), ``sample`` ≤ 0, a datasets id that cannot be loaded, or a
            ``"<name>:<split>"`` that ``sources`` does not hold (see :meth:`DataSources.rows`).
    """
    if isinstance(source, str):
        texts = _read_source(source, text_field, split, sources or DataSources())
        where = source
    else:
        texts, where = [str(t) for t in source], "the prompt list"
    texts = [t.strip() for t in texts if t is not None and str(t).strip()]
    if max_prompts is not None:
        if max_prompts <= 0:
            raise TextRLError(f"data.max_prompts: got {max_prompts}; expected a positive integer or null")
        texts = texts[:max_prompts]
    if sample is not None:
        if sample <= 0:
            raise TextRLError(f"eval.num_prompts: got {sample}; expected a positive integer")
        texts = random.Random(seed).sample(texts, min(sample, len(texts)))
    if prefix_tokens is not None:
        texts = cut_to_prefix(texts, prefix_tokens, tokenizer, seed=seed)
    if not texts:
        raise TextRLError(f"data.prompts: {where!r} holds no prompts; expected at least one non-empty text")
    return texts


def prefix_range(prefix_tokens) -> tuple[int, int]:
    """``(lo, hi)`` token counts from ``data.prefix_tokens``: ``k`` gives ``(k, k)``, ``[lo, hi]``
    gives itself.

    Raises:
        TextRLError: not a positive integer nor a two-element ``[lo, hi]`` with 1 ≤ lo ≤ hi.
    """
    expected = "expected a positive integer k, a range [min, max] with 1 <= min <= max, or null"
    given = (
        list(prefix_tokens)
        if isinstance(prefix_tokens, Sequence) and not isinstance(prefix_tokens, str)
        else prefix_tokens
    )
    value = [given, given] if isinstance(given, int) and not isinstance(given, bool) else given
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not 1 <= value[0] <= value[1]
    ):
        raise TextRLError(f"data.prefix_tokens: got {given!r}; {expected}")
    return value[0], value[1]


def cut_to_prefix(texts: Iterable[str], prefix_tokens, tokenizer, seed: int = 0) -> list[str]:
    """Keep the first k tokens of each text (decoded back to text).

    Args:
        texts: the texts to cut.
        prefix_tokens: ``k`` (every text), or ``[lo, hi]``: k drawn per text, uniformly from
            lo..hi inclusive, with ``random.Random(seed)`` in text order (TRL's ``LengthSampler``).
        tokenizer: a Hugging Face tokenizer; texts are encoded without special tokens.
        seed: seeds the draws of k; the same seed and texts give the same prefixes.

    Returns:
        list[str]: the cut texts, stripped; texts whose prefix decodes to nothing are dropped.

    Raises:
        TextRLError: a bad ``prefix_tokens`` (see :func:`prefix_range`) or no tokenizer given.
    """
    lo, hi = prefix_range(prefix_tokens)
    if tokenizer is None:
        raise TextRLError("data.prefix_tokens needs a tokenizer; got None")
    texts = list(texts)
    rng = random.Random(seed)
    lengths = [rng.randint(lo, hi) for _ in texts] if lo < hi else [lo] * len(texts)
    heads = [_head(text, hi) for text in texts]  # tokenize a head of about hi tokens, not the whole review
    ids = tokenizer(heads, add_special_tokens=False)["input_ids"] if texts else []
    out = []
    for text, head, row, k in zip(texts, heads, ids, lengths):
        if len(row) < k and head != text:  # the head held too few tokens: use the whole text
            row = tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = tokenizer.decode(row[:k], skip_special_tokens=True).strip()
        if cut:
            out.append(cut)
    return out


_WORD_END = re.compile(r"\S(?=\s)")


def _head(text: str, tokens: int) -> str:
    """A prefix of ``text`` that ends where a word ends (a non-space followed by a space) and is
    long enough to usually hold ``tokens`` tokens, or ``text`` itself when short. Tokenizers split
    words at spaces before merging, so the tokens of the prefix are the first tokens of ``text``
    (the tests check it against whole-text tokenization)."""
    window = 8 * tokens + 48
    if len(text) <= window:
        return text
    ends = [m.end() for m in _WORD_END.finditer(text, 0, window)]
    return text[: ends[-1]] if ends else text


def _read_source(source: str, text_field: str | None, split: str, sources: DataSources) -> list[str]:
    if source == BUILTIN:
        return builtin_prompts()
    generated = sources.rows(source, "data.prompts")
    if generated is not None:
        return [_row_text(row, text_field, source) for row in generated]
    path = os.path.expanduser(source)
    base = path[:-3] if path.endswith(".gz") else path
    if os.path.isfile(path):
        return _read_file(path, base, text_field)
    if base.endswith(_SUFFIXES) or not _looks_like_hub_id(source):
        raise TextRLError(
            f"data.prompts: file {source!r} does not exist; expected 'builtin', a "
            f".txt/.json/.jsonl/.csv path or a datasets id"
        )
    return _read_dataset(source, text_field, split)


def _looks_like_hub_id(source: str) -> bool:
    """``name`` or ``owner/name``: no leading ./, /, ~ and at most one slash."""
    return source.count("/") <= 1 and not source.startswith((".", "/", "~"))


def _read_file(path: str, base: str, text_field: str | None) -> list[str]:
    raw = read_text(path, "data.prompts")
    try:
        if base.endswith(".jsonl"):
            rows = parse_jsonl(raw, source=path)
        elif base.endswith(".json"):
            rows = json.loads(raw) if raw.strip() else []
            if isinstance(rows, dict):  # {"prompts": [...]} or {"data": [...]}
                rows = next((v for v in rows.values() if isinstance(v, list)), [rows])
        elif base.endswith(".csv"):
            rows = list(csv.DictReader(io.StringIO(raw)))
        else:
            return raw.splitlines()
    except json.JSONDecodeError as e:
        raise TextRLError(
            f"data.prompts: {path!r} is not valid JSON ({e.msg} at line {e.lineno}); "
            f"expected {'one JSON object per line' if base.endswith('.jsonl') else 'a JSON list'}"
        ) from None
    return [_row_text(row, text_field, path) for row in rows]


def _row_text(row, text_field: str | None, where: str) -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        raise TextRLError(
            f"data.prompts: row {row!r} in {where!r} is a {type(row).__name__}; expected a string or an object"
        )
    if text_field is None and isinstance(row.get("chosen"), str) and "Human:" in row["chosen"]:
        return first_human_turn(row["chosen"])  # hh-rlhf: the conversation's opening request
    if text_field is None and "instruction" in row:  # Alpaca: the instruction and its input, as SFT sees them
        return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    fields = (text_field,) if text_field else TEXT_FIELDS
    for key in fields:
        if key in row:
            return row[key]
    raise TextRLError(
        f"data.text_field: rows in {where!r} have keys {sorted(row)}; expected one of {list(fields)} "
        f"(set data.text_field)"
    )


def _read_dataset(name: str, text_field: str | None, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise TextRLError(
            f"data.prompts: {name!r} is not a file, and reading a datasets id needs `pip install datasets`"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # datasets raises many types; report one line
        first = first_line(e) or type(e).__name__
        raise TextRLError(f"data.prompts: cannot load {name!r} as a file or a datasets id ({first})") from None
    return [_row_text(row, text_field, name) for row in ds]
