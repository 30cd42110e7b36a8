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
def textrl_interactions() -> dict[str, Callable[..., Any]]:
    """Return ``{name: factory}``; ``factory(**params)`` builds a :class:`textrl.Interaction`
    (multi-turn episodes: what the env appends after each policy turn, see
    :mod:`textrl.interactions.base`). Options come from the factory's signature and its
    ``config_checks``, as for reward models.
    """


# -- the lifecycle hooks: every stage (sft, rm, rl, eval) reports through these three ----------
# One stage runs at a time (stage=instructgpt runs sft, rm, rl, eval one after the other, each
# in its own sub-folder with its own start/end), so the calls between a start and its end belong
# to the stage ``cfg.stage`` named at the start. Metric names carry their meaning:
#   rl:   objective/*, loss/*, policy/*, val/*, kl/*, reward/*, perf/* (see the README)
#   sft:  train/loss, train/learning_rate, train/grad_norm, train/epoch; eval/loss (held out)
#   rm:   train/loss, train/accuracy, train/learning_rate, train/epoch; eval/loss and
#         eval/pairwise_accuracy (ranking) or eval/accuracy (classification)
#   eval: eval/<the numbers of eval.json>, e.g. eval/win_rate, eval/policy/mean_reward


@hookspec
def textrl_on_train_start(cfg, run_dir: str) -> None:
    """Called once when a stage starts, with its resolved config (``cfg.stage`` names the stage:
    sft, rm, rl or eval) and its run directory."""


@hookspec
def textrl_on_update_end(update: int, metrics: dict[str, float], samples: list[dict]) -> None:
    """Called with every scalar-metrics record of the running stage.

    rl: after every update (1-based ``update``), and every ``trainer.sample_every`` updates with
    a few ``{"prompt", "response", "score"}`` samples (else []). sft and rm: every logging step
    (``update`` = optimizer steps done; 0 for the held-out evaluation before training), samples
    []. eval: once, ``update`` 0, the evaluation's numbers, samples []. Metric names: see above.
    """


@hookspec
def textrl_on_train_end(summary: dict) -> None:
    """Called once when a stage ends with its summary (what it writes to ``summary.json``, or
    ``eval.json`` for eval): rl's has first/last mean score, updates and wall time."""
