"""Crash-safe file writes: a run that dies never leaves a half-written file behind; and the one
JSON-lines reader and writer (:func:`parse_jsonl`, :func:`read_jsonl`, :func:`jsonl_line`,
:func:`append_jsonl`, :func:`write_jsonl`).

JSON lines: one strict JSON value per line, lines split on ``"\\n"`` only (a U+2028 inside a
string is text, not a line break), blank lines skipped. The one rule for a torn line: a last line
with no newline after it that is not valid JSON is a write cut short (a killed run appends each
record with one ``write`` ending in ``"\\n"``), so it is skipped with a warning; any other line
that is not JSON is an error.

Files and directories written here get the permissions an ordinary ``open``/``mkdir`` would give
under the user's umask (0644 and 0755 under umask 022), not the private 0600/0700 that
``tempfile.mkstemp``/``mkdtemp`` create their temporary files with.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any, Callable

from textrl.errors import TextRLError

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's umask (e.g. ``0o022``); read by setting and restoring it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The file gets mode ``0o666 & ~umask``, as ``open(path, "w")`` would give it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` made strict-JSON-safe: dicts, lists and tuples walked, other numbers (numpy, 0-d
    tensors) turned into ``float``, and every non-finite float (NaN, ±Infinity) into ``None``
    (JSON ``null``), which ``json.dumps(..., allow_nan=False)`` would reject.

    Raises:
        TypeError: a value that is neither JSON-native nor convertible with ``float``.
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    value = float(obj)
    return value if math.isfinite(value) else None


def atomic_write_json(path: str, obj: Any) -> None:
    """:func:`atomic_write_text` of ``json.dumps(obj, indent=2)``, strict (:func:`strict_json`)."""
    atomic_write_text(path, json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n")


def atomic_save_dir(path: str, save: Callable[[str], None]) -> None:
    """Call ``save(tmp_dir)`` then move ``tmp_dir`` to ``path`` (replacing an older one).

    A crash inside ``save`` leaves ``path`` as it was. The directory gets mode
    ``0o777 & ~umask``, as ``os.mkdir`` would give it (what ``save`` writes inside keeps its own).
    """
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        save(tmp)
        old = None
        if os.path.exists(path):
            old = path + ".old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def jsonl_line(record: dict) -> str:
    """``record`` as one strict JSON line, newline included (:func:`strict_json`: NaN/Infinity
    become ``null``)."""
    return json.dumps(strict_json(record), allow_nan=False) + "\n"


def append_jsonl(path: str, record: dict) -> None:
    """Append :func:`jsonl_line` of ``record`` with a single ``write`` and flush it to disk."""
    line = jsonl_line(record)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str, records: list) -> None:
    """Replace ``path`` atomically (:func:`atomic_write_text`) with one :func:`jsonl_line` per record."""
    atomic_write_text(path, "".join(jsonl_line(record) for record in records))


def parse_jsonl(text: str, source: str = "<text>", *, strict: bool = False) -> list:
    """The JSON value of each non-blank line of ``text`` (a whole JSON-lines file), under the
    module's torn-line rule: a last line without a newline after it that is not JSON is skipped
    (logged as a warning naming ``source``).

    Args:
        text: the file's contents.
        source: the file's name, for the warning.
        strict: also reject the ``NaN``/``Infinity``/``-Infinity`` tokens Python's ``json``
            accepts (textrl writes ``null`` for them: :func:`strict_json`).

    Raises:
        json.JSONDecodeError: any other line that is not (strict) JSON; its ``lineno`` and
            ``colno`` count in the whole ``text`` and ``msg`` is the reason.
    """
    def reject(token):
        raise json.JSONDecodeError(f"{token} is not strict JSON", token, 0)

    options = {"parse_constant": reject} if strict else {}
    rows, start = [], 0
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line, **options))
            except json.JSONDecodeError as e:
                if number == len(lines):  # no newline after it: a write cut short
                    log.warning("%s: skipped its last line, cut short (%s)", source, e.msg)
                    break
                raise json.JSONDecodeError(e.msg, text, start + (e.pos if e.doc == line else 0)) from None
        start += len(line) + 1
    return rows


def read_jsonl(path: str, key: str | None = None) -> list:
    """:func:`parse_jsonl` of the UTF-8 file ``path``.

    Args:
        path: a JSON-lines file.
        key: the setting the file came from (``"run_dir"``, ``"trainer.resume"``): a line that is
            not JSON then raises :class:`TextRLError` ``<key>: '<path>' line N is not JSON (<reason>);
            expected one JSON object per line`` instead of ``json.JSONDecodeError``.

    Raises:
        OSError: the file cannot be read.
        json.JSONDecodeError: a broken line other than a torn last one, when ``key`` is ``None``.
        TextRLError: the same, when ``key`` is given.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parse_jsonl(text, source=path)
    except json.JSONDecodeError as e:
        if key is None:
            raise
        raise TextRLError(f"{key}: {path!r} line {e.lineno} is not JSON ({e.msg}); expected one JSON object "
                          f"per line") from None
