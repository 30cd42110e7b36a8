"""The check vocabulary: what one setting may hold, and the one-line error when it does not.

A :class:`Check` is attached to a schema field (``metadata={"check": ...}``, see
:mod:`textrl.config.schema`) or listed in a plugin factory's ``config_checks``; either way the
error line is ``<key>: got <value>; expected <expected>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from textrl.config import choices as C
from textrl.errors import TextRLError


@dataclass(frozen=True)
class Check:
    """What one setting may hold: ``accepts(value)`` decides, ``expected`` is the text the error
    line ends with (``<key>: got <value>; expected <expected>``)."""

    accepts: Callable[[Any], bool]
    expected: str

    def __call__(self, key: str, value: Any) -> None:
        """Raise :class:`TextRLError` naming ``key`` when ``value`` is not accepted."""
        if not self.accepts(value):
            raise TextRLError(f"{key}: got {value!r}; expected {self.expected}")


def _bounds_text(gt, ge, lt, le, integer: bool) -> str:
    """``"a number in (0, 1]"``, ``"a positive integer"``, ``"an integer >= 2"``... for the bounds."""
    kind = "an integer" if integer else "a number"
    low = (f"[{ge}" if ge is not None else f"({gt}") if (ge is not None or gt is not None) else None
    high = (f"{le}]" if le is not None else f"{lt})") if (le is not None or lt is not None) else None
    if low and high:
        return f"{kind} in {low}, {high}"
    if integer and ge == 1:
        return "a positive integer"
    if low:
        return f"{kind} {'>=' if ge is not None else '>'} {ge if ge is not None else gt}"
    if high:
        return f"{kind} {'<=' if le is not None else '<'} {le if le is not None else lt}"
    return kind


def number(
    gt=None, ge=None, lt=None, le=None, integer: bool = False, optional: bool = False, expected: Optional[str] = None
) -> Check:
    """A finite number (an int when ``integer``) within the given bounds; ``optional`` also
    accepts ``null``. ``expected`` replaces the generated description."""

    def accepts(v) -> bool:
        if v is None:
            return optional
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return False
        return (
            math.isfinite(v)
            and (gt is None or v > gt)
            and (ge is None or v >= ge)
            and (lt is None or v < lt)
            and (le is None or v <= le)
        )

    text = expected or _bounds_text(gt, ge, lt, le, integer) + (" or null" if optional else "")
    return Check(accepts, text)


def integer(gt=None, ge=None, lt=None, le=None, optional: bool = False, expected: Optional[str] = None) -> Check:
    """:func:`number` restricted to integers."""
    return number(gt, ge, lt, le, integer=True, optional=optional, expected=expected)


def one_of(*choices: str) -> Check:
    """One of the named ``choices`` (a tuple from :mod:`textrl.config.choices`, the one
    definition of a choice setting's values)."""
    return Check(lambda v: v in choices, f"one of {list(choices)}")


def matches(pattern: str, expected: str) -> Check:
    """A string matching the regular expression ``pattern`` in full."""
    return Check(lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None, expected)


def prefix_tokens_ok(value) -> bool:
    """``data.prefix_tokens``: null, k ≥ 1, or ``[min, max]`` with 1 ≤ min ≤ max (integers)."""

    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if value is None or (whole(value) and value >= 1):
        return True
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return False
    bounds = list(value)
    return len(bounds) == 2 and all(whole(b) for b in bounds) and 1 <= bounds[0] <= bounds[1]


POSITIVE = integer(ge=1)
"""An integer ≥ 1."""
FRACTION = number(ge=0, lt=1)
"""A number in [0, 1)."""
DEVICE = matches(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")
"""A device name: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
PREFIX_TOKENS = Check(prefix_tokens_ok, "a positive integer k, a range [min, max] with 1 <= min <= max, or null")
"""``data.prefix_tokens``: see :func:`prefix_tokens_ok`."""


def episode_budget(*, has_interaction: bool, max_new_tokens: int, max_turns, max_episode_tokens, turn_reward) -> int:
    """Check the episode settings (``env.*``; ``has_interaction``: ``interaction=<name>`` is set);
    returns ``max_episode_tokens`` (when ``None``: ``max_new_tokens``
    for one turn, else ``2 · max_turns · max_new_tokens``, room for every policy turn at its limit
    and as many env tokens).

    Raises:
        TextRLError: a budget that is not a positive integer, an unknown ``turn_reward``, or a
            multi-turn setting (``max_turns`` ≠ 1, ``max_episode_tokens`` ≠ ``max_new_tokens``,
            ``turn_reward=model``) without an interaction.
    """
    if turn_reward not in C.TURN_REWARDS:
        raise TextRLError(f"env.turn_reward: got {turn_reward!r}; expected one of {list(C.TURN_REWARDS)}")
    if isinstance(max_turns, int) and not isinstance(max_turns, bool) and max_episode_tokens is None:
        max_episode_tokens = max_new_tokens if max_turns == 1 else 2 * max_turns * max_new_tokens
    for name, value in (("env.max_turns", max_turns), ("env.max_episode_tokens", max_episode_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise TextRLError(f"{name}: got {value!r}; expected a positive integer")
    if not has_interaction:
        multiturn = {"env.max_turns": (max_turns, 1), "env.max_episode_tokens": (max_episode_tokens, max_new_tokens)}
        multiturn["env.turn_reward"] = (turn_reward, "final")
        for name, (value, single) in multiturn.items():
            if value != single:
                raise TextRLError(
                    f"{name}: got {value!r} without an interaction; expected {single!r} (a single-turn episode), "
                    f"or interaction=<name> for multi-turn episodes"
                )
    return max_episode_tokens
