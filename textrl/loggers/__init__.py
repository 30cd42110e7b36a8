"""Loggers: plugins on the lifecycle hooks (``textrl_on_train_start/update_end/train_end``).

``jsonl`` (metrics.jsonl, samples.jsonl) is always on; ``logger=console|wandb|none`` adds one more.
"""

from textrl.loggers.console import ConsoleLogger
from textrl.loggers.jsonl import JsonlLogger


def make_logger(cfg_logger):
    """The logger plugin object for ``logger.name`` (``None`` for ``none``; the name is
    validated by :func:`textrl.config.check_config`)."""
    name = cfg_logger.name
    if name == "console":
        return ConsoleLogger()
    if name == "wandb":
        from textrl.loggers.wandb import WandbLogger  # wandb is imported only when used

        return WandbLogger(cfg_logger)
    return None


__all__ = ["ConsoleLogger", "JsonlLogger", "make_logger"]
