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
