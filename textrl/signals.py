"""Stopping a training stage cleanly on SIGTERM (what SLURM and Kubernetes send before they preempt
a job) and SIGINT (Ctrl-C).

While a stage runs inside :class:`StopSignals`, the first SIGTERM or SIGINT only records the
request: the stage finishes the update (or optimizer step) in progress, writes a checkpoint where
it can resume from one, and raises :class:`~textrl.errors.Interrupted`, which the CLI prints as one
line and turns into exit status ``128 + signum`` (143 for SIGTERM, 130 for SIGINT). A second
signal exits at once (``SystemExit(128 + signum)``), without a checkpoint. The previous handlers
are restored when the stage ends.

Tests make a run signal itself at a fixed point: with the environment variable
``TEXTRL_TEST_SIGNAL_AT_UPDATE=<k>`` (or ``<k>:<NAME>``: ``INT``, ``KILL``...; default ``TERM``)
the RL loop (sft and rm: after optimizer step ``k``) sends its own process that signal once
update ``k`` has been logged (:func:`send_test_signal`). Nothing else reads it.
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
TEST_SIGNAL_AT_UPDATE = "TEXTRL_TEST_SIGNAL_AT_UPDATE"


def signal_name(signum: int) -> str:
    """``"SIGTERM"``, ``"SIGINT"``... for a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """Context manager: SIGTERM and SIGINT request a stop (:attr:`signum`) instead of ending the
    process; a second one raises ``SystemExit(128 + signum)`` at once.

    Handlers can only be installed from the main thread; elsewhere (a stage run from a worker
    thread) this does nothing and the signals keep their previous handlers.

    Attributes:
        signum: the first stop signal received, ``None`` until one arrives.
        what: a few words for the acknowledgement line, e.g. ``"after the current update"``.
    """

    def __init__(self, what: str = "at the next update"):
        self.signum: int | None = None
        self.what = what
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        # os.write, not print/logging: the handler may run while the main thread is inside a
        # buffered write to stderr, and re-entering that buffer raises
        name = signal_name(signum)
        if self.signum is None:
            self.signum = signum
            os.write(2, f"textrl: {name} received: stopping {self.what} (send it again to exit at once)\n".encode())
            return
        os.write(2, f"textrl: second {name}: exiting at once without a checkpoint\n".encode())
        raise SystemExit(128 + signum)


def send_test_signal(update: int) -> None:
    """Send this process the signal ``TEXTRL_TEST_SIGNAL_AT_UPDATE`` asks for when ``update`` is
    the one it names (``"<k>"`` → SIGTERM, ``"<k>:INT"`` → SIGINT, ``"<k>:KILL"`` → SIGKILL); a
    test hook, see the module docstring. Does nothing when the variable is unset."""
    wanted = os.environ.get(TEST_SIGNAL_AT_UPDATE)
    if not wanted:
        return
    at, _, name = wanted.partition(":")
    if int(at) == update:
        os.kill(os.getpid(), getattr(signal, "SIG" + (name or "TERM").upper()))
