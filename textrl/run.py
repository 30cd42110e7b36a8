"""``run(cfg)``: seed, load plugins, pick the device, dispatch on ``cfg.stage`` with the stage's
loggers registered."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from textrl.config import check_config
from textrl.devices import resolve_device
from textrl.distributed import launched_rank
from textrl.errors import TextRLError


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg, run_dir: str | None = None, registry=None) -> dict:
    """Run ``cfg.stage`` and return its summary.

    Args:
        cfg: the composed config (``TrainConfig`` schema).
        run_dir: output directory; default: Hydra's run directory, else the current directory.
        registry: a :class:`textrl.plugins.PluginRegistry`; default: :func:`load_plugins`.

    Every setting is range- and choice-checked (:func:`textrl.config.check_config`) before
    anything is loaded or written.

    Raises:
        TextRLError: any bad input (config, data, model, reward model).
    """
    from textrl.plugins import load_plugins

    registry = registry or load_plugins()
    check_config(cfg, registry)
    if run_dir is None:
        run_dir = _hydra_run_dir() or os.getcwd()
    os.makedirs(run_dir, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise TextRLError(f"run directory {run_dir!r} is not writable; expected a writable hydra.run.dir")
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    return run_stage(cfg, registry, run_dir, device)


def _hydra_run_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None


def run_stage(cfg, registry, run_dir: str, device) -> dict:
    """Run the one stage ``cfg.stage`` names, its loggers registered as plugins while it runs.

    The loggers (:func:`textrl.loggers.stage_loggers`: metrics.jsonl and ``logger.name``, in
    ``run_dir``) are registered here for every stage, on the main process only when several
    run. ``instructgpt`` registers none itself: it calls this for each of its four stages.
    """
    from textrl.loggers import stage_loggers
    from textrl.stages import evaluate, instructgpt, reward_model, rl, sft

    if cfg.stage == "instructgpt":
        return instructgpt.run_pipeline(cfg, registry, run_dir, device)
    stage = {"sft": sft.train, "rm": reward_model.train, "rl": rl.train, "eval": evaluate.evaluate}[cfg.stage]
    loggers = stage_loggers(cfg, run_dir) if launched_rank() == 0 else []
    names = [registry.manager.register(logger) for logger in loggers]
    try:
        return stage(cfg, registry, run_dir, device)
    finally:
        for name in names:
            registry.manager.unregister(name=name)
