"""Adds this package's YAML presets (``reward=happy_words``) to Hydra's config search path."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class TextrlRegexRewardSearchPath(SearchPathPlugin):
    """Appends ``pkg://textrl_regex_reward.conf`` so its ``reward/*.yaml`` presets can be selected."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="textrl-regex-reward", path="pkg://textrl_regex_reward.conf")
