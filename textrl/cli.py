"""The ``textrl`` command: ``textrl [overrides...]`` (a Hydra app) and ``textrl plugins``."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from textrl.config import check_plugin_overrides, register_configs, register_plugin_configs  # noqa: E402
from textrl.errors import TextRLError  # noqa: E402

_registry = None


def _fail(message: str) -> None:
    print(f"textrl: error: {message}", file=sys.stderr)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path="pkg://textrl.conf", config_name="train")
def _app(cfg: DictConfig):
    from textrl.run import run

    try:
        return run(cfg, registry=_registry)
    except TextRLError as e:
        _fail(str(e))
    except OmegaConfBaseException as e:  # e.g. an interpolation whose resolver raised TextRLError
        cause = e.__cause__ if isinstance(e.__cause__, TextRLError) else e
        _fail(str(cause).splitlines()[0])


def main() -> None:
    """Console-script entry point."""
    global _registry
    from transformers.utils import logging as hf_logging

    from textrl.plugins import describe, load_plugins

    hf_logging.disable_progress_bar()
    try:
        _registry = load_plugins()
    except TextRLError as e:
        _fail(str(e))
    if sys.argv[1:2] == ["plugins"]:
        print(describe(_registry))
        return
    try:
        check_plugin_overrides(sys.argv[1:], _registry, default_options())
    except TextRLError as e:
        _fail(str(e))
    register_configs()
    register_plugin_configs(_registry)
    _app()


def default_options() -> dict[str, str]:
    """The ``reward``/``algo`` options ``conf/train.yaml``'s defaults list picks."""
    from importlib import resources

    import yaml

    train = yaml.safe_load(resources.files("textrl.conf").joinpath("train.yaml").read_text())
    picks = {}
    for entry in train.get("defaults", []):
        if isinstance(entry, dict):
            picks.update({k: v for k, v in entry.items() if isinstance(v, str)})
    return picks


if __name__ == "__main__":
    main()
