"""GRPO for textrl: group-relative advantages, clipped ratio, KL to the reference, no critic."""

from textrl_grpo.grpo import GRPO, group_advantages, grpo_loss, state_group_advantages

__all__ = ["GRPO", "group_advantages", "grpo_loss", "state_group_advantages"]
