"""Reward models. The built-ins are registered as a plugin, through the same hook as a third party's."""

from textrl.hookspecs import hookimpl
from textrl.rewards.base import RewardModel, check_scores
from textrl.rewards.learned import LearnedReward
from textrl.rewards.sentiment import SentimentReward


@hookimpl
def textrl_reward_models():
    """textrl's built-in reward models."""
    return {"sentiment": SentimentReward, "learned": LearnedReward}


__all__ = ["LearnedReward", "RewardModel", "SentimentReward", "check_scores"]
