"""Crash-safe file writes: a run that dies never leaves a half-written file behind.

Files and directories written here get the permissions an ordinary ``open``/``mkdir`` would give
under the user's umask (0644 and 0755 under umask 022), not the private 0600/0700 that
``tempfile.mkstemp``/``mkdtemp`` create their temporary files with.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable


def current_umask() -> int:
    """The process's umask (e.g. ``0o022``); read by setting and restoring it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The file gets mode ``0o666 & ~umask``, as ``open(path, "w")`` would give it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
