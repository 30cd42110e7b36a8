"""Interactions: what the environment appends between the policy's turns (multi-turn episodes).

The contract is in :mod:`textrl.interactions.base`; the built-ins (``calculator``, ``dialogue``)
are registered through the ``textrl_interactions`` hook, the same way a third party's are.
"""

from textrl.hookspecs import hookimpl
from textrl.interactions.base import EpisodeView, Interaction, Reply, Turn, end_of_turn_id, message_ids
from textrl.interactions.calculator import CalcError, Calculator, safe_eval
from textrl.interactions.dialogue import Dialogue


@hookimpl
def textrl_interactions():
    """textrl's built-in interactions."""
    return {"calculator": Calculator, "dialogue": Dialogue}


__all__ = [
    "CalcError",
    "Calculator",
    "Dialogue",
    "EpisodeView",
    "Interaction",
    "Reply",
    "Turn",
    "end_of_turn_id",
    "message_ids",
    "safe_eval",
]
