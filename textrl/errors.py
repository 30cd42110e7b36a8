"""The one exception type textrl raises for bad input.

Every user-facing mistake (a config value, a data file, a model path, a reward model that
misbehaves) raises :class:`TextRLError` with a single-line message that names the bad value and
what was expected. The CLI prints that line and exits with status 1 instead of a traceback.
"""

from __future__ import annotations


class TextRLError(ValueError):
    """Bad input to textrl: a config value, a data file, a model, a reward model's output.

    Subclasses ``ValueError`` so library users can catch it the usual way. The message is one
    line: ``"<what>: got <bad value>; expected <what is allowed>"``.
    """


class NonFiniteError(TextRLError):
    """A NaN or inf in a quantity training depends on: a reward, an advantage, a loss, a gradient.

    Attributes:
        quantity: what was non-finite (``"reward"``, ``"advantages"``, ``"loss/total"``,
            ``"gradient norm"``...). The trainer adds the update number and, following
            ``trainer.on_nonfinite``, stops the run or skips the rest of the batch.
    """

    def __init__(self, quantity: str, message: str):
        super().__init__(message)
        self.quantity = quantity


class WriteError(TextRLError):
    """An output file or directory could not be written: a full disk, a missing permission, a
    read-only or vanished file system.

    Raised by the writers of :mod:`textrl.io` (every output textrl writes goes through them), so
    the CLI prints one line naming the path and the operating system's reason instead of a
    traceback. The message is ``"<path>: cannot write (<reason>); expected a writable directory
    with free space"``; :mod:`textrl.stages.rl` adds how to resume.

    Attributes:
        path: the file or directory being written.
        reason: the operating system's text for the failure (``"No space left on device"``,
            ``"Permission denied"``...).
        errno: the error number (``errno.ENOSPC``...), or ``None`` when the writer gave none.
    """

    def __init__(self, path: str, reason: str, errno: int | None = None, message: str | None = None):
        super().__init__(message or f"{path}: cannot write ({reason}); expected a writable directory with free space")
        self.path, self.reason, self.errno = path, reason, errno


class Interrupted(Exception):
    """The run was stopped by SIGTERM or SIGINT at an update boundary (:mod:`textrl.signals`).

    Not a :class:`TextRLError`: nothing was wrong with the input. The CLI prints the one-line
    message (where the checkpoint is, how to resume) and exits with ``128 + signum``.

    Attributes:
        signum: the signal's number (``signal.SIGTERM`` = 15, ``signal.SIGINT`` = 2).
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def first_line(error: BaseException | str) -> str:
    """The first line of ``str(error)`` (an exception's message, or a text), ``""`` when it is empty:
    how a foreign exception's reason goes into a one-line :class:`TextRLError` message."""
    lines = str(error).splitlines()
    return lines[0] if lines else ""
