"""Run one stage with its loggers registered as plugins while it runs."""

from __future__ import annotations

from typing import Callable

from textrl.distributed import launched_rank
from textrl.loggers import stage_loggers

StageFn = Callable[..., dict]
"""A stage entry point: ``stage(cfg, registry, run_dir, device) -> summary``."""


def run_logged(stage: StageFn, cfg, registry, run_dir: str, device) -> dict:
    """Run ``stage`` with its loggers (:func:`textrl.loggers.stage_loggers`: metrics.jsonl and
    ``logger.name``, in ``run_dir``) registered on ``registry``'s plugin manager, on the main
    process only when several run; they are unregistered when it returns or raises.

    Args:
        stage: a stage entry point (see :data:`textrl.stages.STAGES`).
        cfg: the stage's config (``cfg.stage`` names it).
        registry: the :class:`textrl.plugins.PluginRegistry` whose hooks the stage calls.
        run_dir: the stage's output directory.
        device: the ``torch.device`` it runs on.

    Returns:
        the stage's summary dict.
    """
    loggers = stage_loggers(cfg, run_dir) if launched_rank() == 0 else []
    names = [registry.manager.register(logger) for logger in loggers]
    try:
        return stage(cfg, registry, run_dir, device)
    finally:
        for name in names:
            registry.manager.unregister(name=name)
