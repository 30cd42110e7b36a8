"""Reward models. The built-ins are registered as a plugin, through the same hook as a third party's."""

from textrl.hookspecs import hookimpl
from textrl.rewards.base import RewardModel, check_scores
from textrl.rewards.composite import CompositeReward, build_composite
from textrl.rewards.learned import LearnedReward
from textrl.rewards.rbrm import RuleBasedReward
from textrl.rewards.sentiment import SentimentReward


@hookimpl
def textrl_reward_models():
    """textrl's built-in reward models."""
    return {
        "sentiment": SentimentReward,
        "learned": LearnedReward,
        "rbrm": RuleBasedReward,
        "composite": build_composite,
    }


__all__ = [
    "CompositeReward",
    "LearnedReward",
    "RuleBasedReward",
    "build_composite",
    "RewardModel",
    "SentimentReward",
    "check_scores",
]
