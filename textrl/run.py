"""``run(cfg)``: seed, load plugins, pick the device, dispatch on ``cfg.stage``."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from textrl.errors import TextRLError
from textrl.loggers import JsonlLogger, make_logger

STAGES = ("rl",)


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error.

    Raises:
        TextRLError: unknown device name, or CUDA requested but unavailable.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TextRLError(f"device: got {name!r} but CUDA is not available; expected device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TextRLError(f"device: got {name!r}; expected auto, cpu, cuda or cuda:N") from None


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

    Raises:
        TextRLError: any bad input (config, data, model, reward model).
    """
    from textrl.plugins import load_plugins

    if cfg.stage not in STAGES:
        raise TextRLError(f"stage: got {cfg.stage!r}; expected one of {list(STAGES)}")
    if run_dir is None:
        run_dir = _hydra_run_dir() or os.getcwd()
    os.makedirs(run_dir, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise TextRLError(f"run directory {run_dir!r} is not writable; expected a writable hydra.run.dir")
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    registry = registry or load_plugins()
    loggers = [JsonlLogger(run_dir), make_logger(cfg.logger)]
    names = []
    for plugin in filter(None, loggers):
        names.append(registry.manager.register(plugin))
    try:
        from textrl.stages import rl

        return rl.train(cfg, registry, run_dir, device)
    finally:
        for name in names:
            registry.manager.unregister(name=name)


def _hydra_run_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
