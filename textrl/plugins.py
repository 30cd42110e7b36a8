"""The plugin manager: hookspecs, textrl's built-ins, and third-party entry points.

Entry points in the ``textrl`` group are loaded unless ``TEXTRL_DISABLE_PLUGIN_AUTOLOAD`` is
set. A plugin that fails to import is recorded in :data:`PluginRegistry.failures` (name and
error) instead of breaking runs that do not use it. Two plugins claiming the same name of one kind
(policy, reward, algorithm, interaction, dataset) is an error naming both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from textrl import hookspecs
from textrl.errors import TextRLError, first_line

BUILTIN_MODULES = ("textrl.policies", "textrl.rewards", "textrl.algorithms", "textrl.interactions", "textrl.tasks")
DISABLE_ENV = "TEXTRL_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class PluginRegistry:
    """What the loaded plugins provide.

    Attributes:
        manager: the ``pluggy.PluginManager`` (project name ``textrl``).
        policies: policy name → factory (of a :class:`~textrl.policies.contract.PolicyLoader`).
        rewards: reward-model name → factory.
        algorithms: algorithm name → factory.
        interactions: interaction name → factory (multi-turn episodes).
        datasets: generated dataset name → ``rows(split)`` (data sources ``"<name>:<split>"``; a
            stage reads them through ``textrl.data_sources.DataSources(registry.datasets)``).
        providers: ``(kind, name)`` → plugin name that provides it.
        failures: entry-point name → one-line import error.
    """

    manager: pluggy.PluginManager
    policies: dict[str, Callable[..., Any]] = field(default_factory=dict)
    rewards: dict[str, Callable[..., Any]] = field(default_factory=dict)
    algorithms: dict[str, Callable[..., Any]] = field(default_factory=dict)
    interactions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    datasets: dict[str, Callable[..., Any]] = field(default_factory=dict)
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def load_plugins(autoload: bool | None = None) -> PluginRegistry:
    """Build the plugin manager, register built-ins and (optionally) entry points, and collect
    the policy, reward, algorithm, interaction and dataset factories.

    Args:
        autoload: load ``textrl`` entry points; default: unless ``TEXTRL_DISABLE_PLUGIN_AUTOLOAD``
            is set to a non-empty value.

    Raises:
        TextRLError: two plugins provide the same name of one kind.
    """
    import importlib

    pm = pluggy.PluginManager("textrl")
    pm.add_hookspecs(hookspecs)
    for module in BUILTIN_MODULES:
        pm.register(importlib.import_module(module), name=module)
    registry = PluginRegistry(pm)
    if autoload is None:
        autoload = not os.environ.get(DISABLE_ENV)
    if autoload:
        for ep in entry_points(group="textrl"):
            if pm.has_plugin(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as e:  # a broken plugin must not break runs that don't use it
                registry.failures[ep.name] = f"{type(e).__name__}: {first_line(e)}"
    collect_factories(registry)
    return registry


def collect_factories(registry: PluginRegistry) -> None:
    """(Re)read every plugin's ``textrl_policies`` / ``textrl_reward_models`` /
    ``textrl_algorithms`` / ``textrl_interactions`` / ``textrl_datasets`` into ``registry``."""
    pm = registry.manager
    registry.policies.clear()
    registry.rewards.clear()
    registry.algorithms.clear()
    registry.interactions.clear()
    registry.datasets.clear()
    registry.providers.clear()
    for kind, hook, table in (
        ("policy", "textrl_policies", registry.policies),
        ("reward", "textrl_reward_models", registry.rewards),
        ("algo", "textrl_algorithms", registry.algorithms),
        ("interaction", "textrl_interactions", registry.interactions),
        ("dataset", "textrl_datasets", registry.datasets),
    ):
        caller = getattr(pm.hook, hook)
        for impl in caller.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin)
            try:
                provided = impl.function() or {}
            except Exception as e:
                registry.failures[plugin_name] = f"{type(e).__name__}: {first_line(e)}"
                continue
            for name, factory in provided.items():
                other = registry.providers.get((kind, name))
                if other is not None and other != plugin_name:
                    raise TextRLError(
                        f"{kind} name {name!r} is provided by two plugins, {other!r} and "
                        f"{plugin_name!r}; expected unique names (uninstall one, or set "
                        f"{DISABLE_ENV}=1)"
                    )
                table[name] = factory
                registry.providers[(kind, name)] = plugin_name


def describe(registry: PluginRegistry) -> str:
    """A human-readable listing of plugins and what each provides (``textrl plugins``)."""
    lines = []
    for name, plugin in sorted(registry.manager.list_name_plugin(), key=lambda x: x[0]):
        provides = [f"{kind}={n}" for (kind, n), p in sorted(registry.providers.items()) if p == name]
        hooks = sorted(h.name for h in registry.manager.get_hookcallers(plugin) or [])
        lines.append(f"{name}: {', '.join(provides) or '-'}  (hooks: {', '.join(hooks)})")
    for name, error in sorted(registry.failures.items()):
        lines.append(f"{name}: FAILED to load ({error})")
    return "\n".join(lines)
