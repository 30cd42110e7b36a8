"""The ``calculator`` interaction: ``<calc>EXPR</calc>`` tool calls, evaluated safely.

:func:`safe_eval` walks the expression's ``ast`` (never ``eval``): numbers, ``+ - * / // % **``,
unary ``+``/``-`` and parentheses only, with the expression's length, its number of nodes, every
exponent and every intermediate result bounded, so the work of any accepted expression is bounded.
A bad expression is not an exception for the episode: the policy receives an
``error: ...`` message as the tool's result.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from textrl.config import integer, number
from textrl.interactions.base import EpisodeView, Interaction, Reply

CALL = re.compile(r"<calc>(.*?)</calc>", re.S)
MAX_CHARS = 200
MAX_NODES = 64
MAX_EXPONENT = 64
MAX_ABS = 10.0**30

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalcError(ValueError):
    """An expression :func:`safe_eval` refuses or cannot evaluate (the message says why)."""


def safe_eval(
    expression: str,
    *,
    max_chars: int = MAX_CHARS,
    max_nodes: int = MAX_NODES,
    max_exponent: int = MAX_EXPONENT,
    max_abs: float = MAX_ABS,
) -> int | float:
    """Evaluate an arithmetic expression without ``eval``.

    Args:
        expression: e.g. ``"12*(3+4)"``; numbers (int or float literals), ``+ - * / // % **``,
            unary ``+``/``-``, parentheses.
        max_chars: longest accepted expression (characters).
        max_nodes: most ``ast`` nodes.
        max_exponent: largest ``|b|`` in ``a ** b``.
        max_abs: largest magnitude of any literal or intermediate result.

    Returns:
        The value, ``int`` when every operation stays in the integers, else ``float``.

    Raises:
        CalcError: a too long or too large expression, a syntax error, anything but arithmetic
            (names, calls, attributes, strings, booleans, comparisons...), division by zero, a
            result that is too large or not finite.
    """
    if not isinstance(expression, str):
        raise CalcError(f"expected a string, got {type(expression).__name__}")
    if len(expression) > max_chars:
        raise CalcError(f"expression has {len(expression)} characters; at most {max_chars}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalcError(f"cannot parse {expression.strip()!r}") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > max_nodes:
        raise CalcError(f"expression has {nodes} parts; at most {max_nodes}")

    def bounded(value):
        if isinstance(value, float) and not math.isfinite(value) or abs(value) > max_abs:
            raise CalcError(f"result larger than {max_abs:g}")
        return value

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return bounded(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                if abs(right) > max_exponent:
                    raise CalcError(f"exponent {right} larger than {max_exponent}")
                if left == 0 and right < 0:
                    raise CalcError("zero to a negative power")
                if abs(left) > 1 and abs(right) * math.log10(abs(left)) > math.log10(max_abs) + 1:
                    raise CalcError(f"result larger than {max_abs:g}")
            try:
                value = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise CalcError("division by zero") from None
            except OverflowError:
                raise CalcError(f"result larger than {max_abs:g}") from None
            if isinstance(value, complex):
                raise CalcError("complex result")
            return bounded(value)
        raise CalcError(f"unsupported {type(node).__name__} (numbers and + - * / // % ** only)")

    return walk(tree)


def format_number(value: int | float) -> str:
    """An evaluated value as text: integers exactly, floats with 12 significant digits."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.12g}"
    return str(value)


class Calculator(Interaction):
    """Answer the policy's ``<calc>EXPR</calc>`` tool call with the value as a ``tool`` message.

    A policy turn ends at ``</calc>`` (the stop string). If the turn holds a call, the last one is
    evaluated with :func:`safe_eval` and its value (or ``error: <why>``) is appended; a turn with
    no call is the final answer and ends the episode.

    Args:
        call_reward: reward for each well-formed call that evaluates (0: none).
        error_reward: reward for a call that fails to evaluate (0: none; e.g. -0.1 to discourage).
        max_chars: longest accepted expression (see :func:`safe_eval`).
    """

    stop_strings = ("</calc>",)
    config_checks = {"call_reward": number(), "error_reward": number(), "max_chars": integer(ge=1)}

    def __init__(self, call_reward: float = 0.0, error_reward: float = 0.0, max_chars: int = MAX_CHARS):
        self.call_reward, self.error_reward, self.max_chars = float(call_reward), float(error_reward), int(max_chars)

    def respond(self, episode: EpisodeView) -> Reply:
        """Evaluate the last ``<calc>...</calc>`` of the turn that just ended, or end the episode."""
        calls = CALL.findall(episode.last.text)
        if not calls:
            return Reply.end()
        try:
            text, reward = format_number(safe_eval(calls[-1], max_chars=self.max_chars)), self.call_reward
        except CalcError as e:
            text, reward = f"error: {e}", self.error_reward
        return Reply.append(self.message_ids(text, role="tool"), reward=reward or None)
