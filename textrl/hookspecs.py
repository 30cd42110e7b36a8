"""The plugin contract: every hook textrl calls, all named ``textrl_*``.

A plugin is a module (or object) with functions marked ``@textrl.hookimpl`` and is found through
the ``textrl`` entry-point group::

    [project.entry-points.textrl]
    myname = "my_package.module"

textrl's own reward models, algorithms and loggers are registered through these same hooks.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("textrl")
hookimpl = pluggy.HookimplMarker("textrl")


@hookspec
def textrl_reward_models() -> dict[str, Callable[..., Any]]:
    """Return ``{name: factory}``; ``factory(**params)`` builds a :class:`textrl.RewardModel`.

    ``reward=<name>`` selects it and every key under ``reward.`` except ``name`` is passed as a
    keyword argument; defaults and accepted keys come from the factory's signature.
    """


@hookspec
def textrl_algorithms() -> dict[str, Callable[..., Any]]:
    """Return ``{name: factory}``; ``factory(**params)`` builds a :class:`textrl.Algorithm`.

    ``algo=<name>`` selects it; keys under ``algo.`` (except ``name``) are its keyword arguments.
    The rest of the contract (``setup(policy, reference, SetupContext)``, ``update(batch)`` and
    its metrics) is written in :mod:`textrl.algorithms.base`.
    """


@hookspec
def textrl_on_train_start(cfg, run_dir: str) -> None:
    """Called once before the first update with the resolved config and the run directory."""


@hookspec
def textrl_on_update_end(update: int, metrics: dict[str, float], samples: list[dict]) -> None:
    """Called after every update (1-based ``update``) with its scalar metrics and, every
    ``trainer.sample_every`` updates, a few ``{"prompt", "response", "score"}`` samples (else [])."""


@hookspec
def textrl_on_train_end(summary: dict) -> None:
    """Called once after training with the run summary (first/last mean score, wall time...)."""
