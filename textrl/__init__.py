"""textrl: RLHF (SFT, reward models, PPO) as reinforcement learning on a Gymnasium environment.

Public API for plugin authors: :data:`hookimpl`, :class:`RewardModel`, :class:`Algorithm`,
:class:`TextRLError`, and the setting checks a plugin factory lists in its ``config_checks``
(:func:`number`, :func:`integer`, :func:`one_of`, :class:`Check`; see :mod:`textrl.config`).
"""

import textrl.envs  # noqa: F401  (registers textrl/TokenGen-v0)
from textrl.algorithms.base import Algorithm
from textrl.config import Check, integer, number, one_of
from textrl.errors import TextRLError
from textrl.hookspecs import hookimpl
from textrl.rewards.base import RewardModel

__version__ = "0.1.0"
__all__ = ["Algorithm", "Check", "RewardModel", "TextRLError", "__version__", "hookimpl", "integer", "number",
           "one_of"]
