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


def first_line(error: BaseException | str) -> str:
    """The first line of ``str(error)`` (an exception's message, or a text), ``""`` when it is empty:
    how a foreign exception's reason goes into a one-line :class:`TextRLError` message."""
    lines = str(error).splitlines()
    return lines[0] if lines else ""
