"""Loggers: plugins on the lifecycle hooks (``textrl_on_stage_start``, ``textrl_on_metrics``,
``textrl_on_stage_end``), which every stage calls.

``jsonl`` (metrics.jsonl, samples.jsonl) is always on; ``logger=console|wandb|none`` adds one more.
:func:`stage_loggers` builds them for one stage; :func:`textrl.stages.runner.run_logged` registers them.
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


def stage_loggers(cfg, run_dir: str) -> list:
    """The logger plugins of one stage: metrics.jsonl/samples.jsonl in ``run_dir`` (started afresh
    unless the stage resumes: rl always cuts them back itself, sft when ``trainer.resume`` is
    set) and the ``logger.name`` logger.

    Raises:
        textrl.TextRLError: unknown logger name.
    """
    chosen = make_logger(cfg.logger)
    resumes = cfg.stage == "rl" or (cfg.stage == "sft" and bool(cfg.trainer.resume))
    return [JsonlLogger(run_dir, fresh=not resumes)] + ([chosen] if chosen is not None else [])


__all__ = ["ConsoleLogger", "JsonlLogger", "make_logger", "stage_loggers"]
