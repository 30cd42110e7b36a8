"""The entry point textrl loads: registers ``algo=grpo``."""

import textrl

from textrl_grpo.grpo import GRPO


@textrl.hookimpl
def textrl_algorithms():
    """``{"grpo": GRPO}``."""
    return {"grpo": GRPO}
