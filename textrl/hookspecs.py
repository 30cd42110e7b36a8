"""The plugin contract: every hook textrl calls, all named ``textrl_*``.

A plugin is a module (or object) with functions marked ``@textrl.hookimpl`` and is found through
the ``textrl`` entry-point group::

    [project.entry-points.textrl]
    myname = "my_package.module"

textrl's own policy loader, reward models, algorithms, interactions and loggers are registered
through these same hooks.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("textrl")
hookimpl = pluggy.HookimplMarker("textrl")


@hookspec
def textrl_policies() -> dict[str, Callable[..., Any]]:
    """Return ``{name: factory}``; ``factory(**params)`` builds a :class:`textrl.PolicyLoader`.

    ``policy=<name>`` selects it and every key under ``policy.`` except ``name`` is passed as a
    keyword argument; defaults and accepted keys come from the factory's signature, checks from its
    ``config_checks``, as for reward models. Each stage (sft, rl, eval) then calls the loader's
    ``load_tokenizer()`` and ``load_policy(stage=, tokenizer=, device=, dropout=)``, which returns a
    :class:`textrl.Policy`. The contract (every member, shape and dtype textrl uses, the reference
    model, saving) is written in :mod:`textrl.policies.contract`; textrl's own ``policy=hf``
    (:class:`textrl.policies.hf.HFPolicyLoader`) is registered through this hook.
    """


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


@hookspec
def textrl_datasets() -> dict[str, Callable[..., Any]]:
    """Return ``{name: rows}``: datasets generated in code, ``rows(split: str) -> list[dict]``.

    A data source written ``"<name>:<split>"`` (``data.prompts``, ``eval.prompts``, ``sft.data``,
    ``rm.data``, the ``dialogue`` interaction's ``path``) reads ``rows(split)`` instead of a file,
    with the rows of a ``.jsonl`` file's format (e.g. ``{"prompt": ...}`` for prompts,
    ``{"messages": [...]}`` for SFT). ``rows`` raises ``ValueError`` for an unknown split, its
    message saying what was expected (``"expected a split in ['train', 'heldout']"``): the user
    sees ``<key>: got '<name>:<split>'; <message>``. Each stage collects these tables into one
    :class:`textrl.DataSources` and passes it down (see :mod:`textrl.data_sources`).
    """


# -- the lifecycle hooks: every stage (sft, rm, rl, eval) reports through these three ----------
# One stage runs at a time (stage=instructgpt runs sft, rm, rl, eval one after the other, each
# in its own sub-folder with its own start/end), so the calls between a start and its end belong
# to the stage ``cfg.stage`` named at the start. Metric names, units and meanings:
# textrl.metrics.METRICS.


@hookspec
def textrl_on_stage_start(cfg, run_dir: str) -> None:
    """A stage starts (called once per stage, before its first metrics).

    :param cfg: the stage's resolved config (a ``DictConfig`` of the ``TrainConfig`` schema);
        ``cfg.stage`` names the stage: ``sft``, ``rm``, ``rl`` or ``eval``.
    :param run_dir: the stage's output directory (``metrics.jsonl`` and the stage's files go there).
    """


@hookspec
def textrl_on_metrics(update: int, metrics: dict[str, float], samples: list[dict]) -> None:
    """A record of scalar metrics of the running stage is ready.

    :param update: the step the record belongs to. rl: the update, 1-based. sft and rm: optimizer
        steps done (0: the held-out evaluation before training). eval: 0.
    :param metrics: ``{name: value}``, names and units as :data:`textrl.metrics.METRICS` lists
        them (rl: ``objective/*``, ``loss/*``, ``policy/*``, ``val/*``, ``kl/beta``,
        ``reward/<label>``, ``perf/*``; sft/rm: ``train/*``, ``eval/*``; eval: the numbers of
        ``eval.json`` as ``eval/*``), plus any an algorithm plugin reports.
    :param samples: rl, every ``trainer.sample_every`` updates: a few
        ``{"prompt", "response", "score", ...}`` rows; otherwise (and for every other stage) ``[]``.

    An implementation may take only the parameters it uses (``update, metrics``).
    """


@hookspec
def textrl_on_stage_end(summary: dict) -> None:
    """A stage ends (called once, after its last metrics).

    :param summary: what the stage writes to ``summary.json`` (``eval.json`` for eval): rl's
        holds the first and last mean score, the updates done and the wall time in seconds;
        sft's and rm's their held-out losses and ``model_dir``.
    """
