"""``run(cfg)``: seed, load plugins, pick the device, dispatch on ``cfg.stage`` with the stage's
loggers registered."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig

from textrl.config import check_config
from textrl.devices import resolve_device
from textrl.errors import TextRLError
from textrl.plugins import load_plugins
from textrl.stages import STAGES


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
    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None


def run_stage(cfg, registry, run_dir: str, device) -> dict:
    """Run the one stage ``cfg.stage`` names, through the stage table
    (:data:`textrl.stages.STAGES`: each single stage with its loggers registered as plugins while
    it runs; ``instructgpt`` runs its four, each with its own)."""
    return STAGES[cfg.stage](cfg, registry, run_dir, device)
