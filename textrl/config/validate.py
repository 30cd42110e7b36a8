"""Range- and choice-checks of a composed config, right after composition and before anything
loads (:func:`check_config`, called by the command and by :func:`textrl.run.run`).

The checks are the schema's (:mod:`textrl.config.schema`: each field carries its own), the loop
parameters every algorithm shares (:class:`~textrl.config.schema.LoopConfig`, under ``algo.``),
the parameters reward models share (:data:`~textrl.config.schema.REWARD_SHARED_CHECKS`, under
``reward.``) and the selected plugins' own ``config_checks``.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from textrl.config.checks import Check, episode_budget, number
from textrl.config.plugin_options import plugin_tables
from textrl.config.schema import REWARD_SHARED_CHECKS, LoopConfig, TrainConfig, field_checks

CHECKS: dict[str, Check] = {
    **dict(field_checks(TrainConfig)),
    **{f"algo.{key}": check for key, check in field_checks(LoopConfig)},
    **{f"reward.{key}": check for key, check in REWARD_SHARED_CHECKS.items()},
}
"""Every checked ``key → Check``, read from the schema (a view, not a second list): the config
groups' fields, then the loop parameters any algorithm has (``algo.lr``...), then the parameters
reward models share (``reward.batch_size``...). A key a config does not have is skipped."""

_ABSENT = object()


def _value(node, path: str):
    """The plain value at dotted ``path`` under ``node`` (``_ABSENT`` when the key does not exist,
    is unset ``???`` or is an interpolation that does not resolve yet, which the run reports)."""
    try:
        for part in path.split("."):
            if not isinstance(node, (dict, DictConfig)) or part not in node:
                return _ABSENT
            if isinstance(node, DictConfig) and OmegaConf.is_missing(node, part):
                return _ABSENT
            node = node[part]
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except OmegaConfBaseException:
        return _ABSENT


def check_plugin_params(kind: str, node, factory, registry=None) -> None:
    """Check a plugin node's (``policy``, ``reward``, ``algo``, ``interaction``) parameters with the
    factory's ``config_checks`` (``{param: Check}``, dotted params for nested ones such as
    ``kl.init``, ``lora.r``); a composite's ``components`` are checked as reward nodes of their own
    (``reward.components.<label>.*``).

    Raises:
        TextRLError: naming ``<kind>.<param>``.
    """
    for param, check in getattr(factory, "config_checks", {}).items():
        value = _value(node, param)
        if value is not _ABSENT:
            check(f"{kind}.{param}", value)
    components = _value(node, "components")
    if registry is not None and isinstance(components, dict) and kind.split(".")[0] == "reward":
        for label, sub in components.items():
            if not isinstance(sub, dict) or sub.get("name") not in registry.rewards:
                continue  # build_composite names a malformed component
            weight = sub.get("weight", 1.0)
            number()(f"{kind}.components.{label}.weight", weight)
            for key, check in REWARD_SHARED_CHECKS.items():
                if _value(sub, key) is not _ABSENT:
                    check(f"{kind}.components.{label}.{key}", _value(sub, key))
            check_plugin_params(f"{kind}.components.{label}", sub, registry.rewards[sub["name"]], registry)


def check_config(cfg, registry=None) -> None:
    """Range- and choice-check every setting of a composed config, before anything loads.

    Runs :data:`CHECKS` (keys that do not exist, such as ``algo.minibatch_size`` for an
    algorithm without one, are skipped), the episode settings together
    (:func:`~textrl.config.checks.episode_budget`: multi-turn settings need an interaction), then
    the selected policy's, reward model's, algorithm's and interaction's own ``config_checks``.

    Args:
        cfg: the composed ``TrainConfig``.
        registry: the :class:`textrl.plugins.PluginRegistry` (plugin checks are skipped without).

    Raises:
        TextRLError: ``<key>: got <value>; expected <...>`` for the first bad setting.
    """
    for key, check in CHECKS.items():
        value = _value(cfg, key)
        if value is not _ABSENT:
            check(key, value)
    env = {
        key: _value(cfg, f"env.{key}") for key in ("max_new_tokens", "max_turns", "max_episode_tokens", "turn_reward")
    }
    if _ABSENT not in env.values():
        episode_budget(has_interaction=_value(cfg, "interaction") not in (None, _ABSENT), **env)
    if registry is None:
        return
    for kind, table in plugin_tables(registry):
        name = _value(cfg, f"{kind}.name")
        if name in table:
            check_plugin_params(kind, cfg[kind], table[name], registry)
