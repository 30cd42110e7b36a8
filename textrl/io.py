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

Every output textrl writes goes through these functions, and a write that fails (a full disk, a
missing permission) raises :class:`~textrl.errors.WriteError` naming the path and the operating
system's reason (:func:`writing` is the one place that translates): the temporary file or
directory is removed, and whatever was at the path before stays as it was.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from textrl.errors import TextRLError, WriteError

# Texts of write failures that arrive without an errno: torch's zip writer (``torch.save`` to a
# path on a full disk raises ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected
# pos ...`` or ``... file write failed``).
WRITER_FAILURE_TEXTS = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
# Rust writers (safetensors) put the errno in the text: ``Os { code: 28, ... }`` / ``(os error 28)``
_RUST_OS_ERROR = re.compile(r"os error (\d+)|Os \{ code: (\d+)")
# below this many free bytes a writer failure without an errno is a full disk
LOW_SPACE_BYTES = 1 << 20


def free_bytes(path: str) -> int | None:
    """Bytes free to this user on the file system holding ``path`` (or its nearest existing
    ancestor); ``None`` when that cannot be read."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def write_error(error: BaseException, path: str) -> WriteError | None:
    """The :class:`~textrl.errors.WriteError` that ``error``, raised while writing ``path``,
    amounts to, or ``None`` when it is not a failed write (a bug, a bad object to save).

    A write failure is an ``OSError`` with an errno anywhere in the exception's chain, a Rust I/O
    error that names its errno, or one of torch's writer failures (:data:`WRITER_FAILURE_TEXTS`),
    which carry no errno: that is ``ENOSPC`` when less than :data:`LOW_SPACE_BYTES` are free on
    the file system, else ``EIO``. Call it before the partly written file is removed, so a full
    disk still reads as full.
    """
    seen, depth = error, 0
    while seen is not None and depth < 8:
        if isinstance(seen, WriteError):
            return seen
        if isinstance(seen, OSError) and seen.errno is not None:
            return WriteError(path, seen.strerror or os.strerror(seen.errno), seen.errno)
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    if not isinstance(error, Exception):
        return None
    text = str(error)
    match = _RUST_OS_ERROR.search(text)
    if match:
        number = int(match.group(1) or match.group(2))
        return WriteError(path, os.strerror(number), number)
    if any(t in text for t in WRITER_FAILURE_TEXTS):
        free = free_bytes(path)
        number = errno.ENOSPC if free is not None and free < LOW_SPACE_BYTES else errno.EIO
        return WriteError(path, os.strerror(number), number)
    return None


@contextmanager
def writing(path: str, shown: str | None = None) -> Iterator[None]:
    """Translate a failed write inside the block into :class:`~textrl.errors.WriteError`
    (:func:`write_error`); every other exception passes unchanged.

    Args:
        path: what the block writes.
        shown: the path the message names, when it differs from ``path`` (a temporary
            directory that becomes ``shown``); paths inside ``path`` are renamed to match.

    Raises:
        WriteError: ``"<path>: cannot write (<reason>); expected a writable directory with free space"``.
    """
    try:
        yield
    except Exception as e:
        failure = write_error(e, path)
        if failure is None:
            raise
        named = failure.path
        if shown is not None:
            named = shown + named[len(path) :] if named.startswith(path) else shown
        if named != failure.path or failure is not e:
            failure = WriteError(named, failure.reason, failure.errno)
        raise failure from None


def save_torch(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` through a Python file, flushed to disk.

    Through a Python file a full disk raises ``OSError(ENOSPC)`` (a path given to ``torch.save``
    raises torch's errno-less ``RuntimeError`` instead); either becomes :class:`WriteError`.

    Raises:
        WriteError: the file cannot be written.
    """
    import torch

    with writing(path):
        with open(path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's umask (e.g. ``0o022``); read by setting and restoring it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask_modes(directory: str) -> None:
    """Give ``directory``, every folder under it and every file in them the mode an ordinary
    ``mkdir``/``open`` gives under the user's umask: ``0o777 & ~umask`` for folders,
    ``0o666 & ~umask`` for files (``0o777 & ~umask`` for a file its owner may execute). Writers
    that textrl does not control create private files: ``safetensors`` 0.8 writes
    ``model.safetensors`` with mode 0600 whatever the umask.

    Raises:
        OSError: a mode that cannot be changed (:func:`atomic_save_dir` translates it through
            :func:`writing`, the SFT Trainer's checkpoint through :func:`write_error`).
    """
    mask = current_umask()
    os.chmod(directory, 0o777 & ~mask)
    for folder, subfolders, files in os.walk(directory):
        for name in subfolders:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The file gets mode ``0o666 & ~umask``, as ``open(path, "w")`` would give it.

    Raises:
        WriteError: the file cannot be written (full disk, permission); ``path`` is unchanged.
    """
    write_file_atomically(path, lambda f: f.write(data))


def write_file_atomically(path: str, write: Callable[[Any], None], suffix: str | None = None) -> None:
    """Call ``write(f)`` on a binary file open on a temporary file beside ``path``, flush it to
    disk and ``os.replace`` it to ``path``. On any failure the temporary file is removed and
    ``path`` is as it was. The file gets mode ``0o666 & ~umask``.

    Raises:
        WriteError: a write that fails (full disk, permission; see :func:`writing`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix or os.path.basename(path))
        try:
            with writing(tmp, shown=path):
                os.chmod(tmp, 0o666 & ~current_umask())
                with os.fdopen(fd, "wb") as f:
                    write(f)
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

    A crash inside ``save`` leaves ``path`` as it was, and the temporary directory is removed. The
    parent directory is created when missing. The directory and everything ``save`` writes in it
    get the modes an ordinary ``mkdir``/``open`` would give them (:func:`apply_umask_modes`).

    Raises:
        WriteError: a write that fails (full disk, permission), naming the file under ``path``
            (see :func:`writing`).
    """
    parent = os.path.dirname(os.path.abspath(path))
    with writing(path):
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path))
        try:
            with writing(tmp, shown=path):  # translated before the partial files go (a full disk reads as full)
                save(tmp)
                apply_umask_modes(tmp)
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
    """Append :func:`jsonl_line` of ``record`` and flush it to disk. A write that fails part way
    is cut back off (best effort), so the file keeps whole lines only.

    Raises:
        WriteError: the line cannot be written (full disk, permission).
    """
    data = jsonl_line(record).encode("utf-8")
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except BaseException:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)


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
        raise TextRLError(
            f"{key}: {path!r} line {e.lineno} is not JSON ({e.msg}); expected one JSON object per line"
        ) from None
