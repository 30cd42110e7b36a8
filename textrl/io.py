"""Crash-safe file writes: a run that dies never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj: Any) -> None:
    """:func:`atomic_write_text` of ``json.dumps(obj, indent=2)``: strict JSON.

    Raises:
        ValueError: ``obj`` holds a NaN or ±inf (nothing is written; callers check first).
    """
    atomic_write_text(path, json.dumps(obj, indent=2, default=float, allow_nan=False) + "\n")


def atomic_save_dir(path: str, save: Callable[[str], None]) -> None:
    """Call ``save(tmp_dir)`` then move ``tmp_dir`` to ``path`` (replacing an older one).

    A crash inside ``save`` leaves ``path`` as it was.
    """
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path))
    try:
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


def append_jsonl(path: str, record: dict) -> None:
    """Append one strict-JSON line with a single ``write`` and flush it to disk.

    Raises:
        ValueError: ``record`` holds a NaN or ±inf (nothing is written; callers check first).
    """
    line = json.dumps(record, default=float, allow_nan=False) + "\n"  # before opening: a bad record writes nothing
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
