"""The entry point textrl loads: registers ``reward=regex``."""

import textrl

from textrl_regex_reward.reward import RegexReward


@textrl.hookimpl
def textrl_reward_models():
    """``{"regex": RegexReward}``."""
    return {"regex": RegexReward}
