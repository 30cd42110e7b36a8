"""A weighted regex/keyword reward with an optional length target, for textrl."""

from textrl_regex_reward.reward import DEFAULT_PATTERNS, RegexReward

__all__ = ["DEFAULT_PATTERNS", "RegexReward"]
