"""Interactions: what the environment appends between the policy's turns (multi-turn episodes).

The contract is in :mod:`textrl.interactions.base`; the built-ins (``calculator``, ``dialogue``)
are registered through the ``textrl_interactions`` hook, the same way a third party's are; the held-out split of the
dialogues, ``hh_dialogues``, through ``textrl_datasets``.
"""

from textrl.hookspecs import hookimpl
from textrl.interactions.base import EpisodeView, Interaction, Reply, Turn, end_of_turn_id, message_ids
from textrl.interactions.calculator import CalcError, Calculator, safe_eval
from textrl.interactions.dialogue import Dialogue, hh_dialogue_rows


@hookimpl
def textrl_interactions():
    """textrl's built-in interactions."""
    return {"calculator": Calculator, "dialogue": Dialogue}


@hookimpl
def textrl_datasets():
    """``hh_dialogues:train`` / ``hh_dialogues:heldout``: disjoint hh-rlhf conversations
    (:func:`~textrl.interactions.dialogue.hh_dialogue_rows`)."""
    return {"hh_dialogues": hh_dialogue_rows}


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
