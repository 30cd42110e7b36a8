"""RL algorithms. The built-ins are registered as a plugin, through the same hook as a third party's."""

from textrl.algorithms.base import Algorithm, SetupContext
from textrl.algorithms.kl import KLConfig
from textrl.algorithms.ppo import PPO
from textrl.algorithms.ppo_ptx import PPOPtx
from textrl.algorithms.reinforce import Reinforce
from textrl.algorithms.vineppo import VinePPO
from textrl.hookspecs import hookimpl


@hookimpl
def textrl_algorithms():
    """textrl's built-in algorithms."""
    return {"ppo": PPO, "ppo_ptx": PPOPtx, "reinforce": Reinforce, "vineppo": VinePPO}


__all__ = ["PPO", "PPOPtx", "Algorithm", "KLConfig", "Reinforce", "SetupContext", "VinePPO"]
