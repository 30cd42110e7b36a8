"""Plugin options from factory signatures: ``reward=<name> reward.<param>=<value>`` works for a
plugin that ships no YAML, and an unknown parameter is rejected with the accepted ones listed; the
same for every plugin kind (:data:`PLUGIN_GROUPS`: ``policy``, ``reward``, ``algo``, ``interaction``).

A factory's parameters are its signature's, and for a class whose ``__init__`` passes
``**kwargs`` on to its base class, the base's too (:func:`factory_parameters`): an algorithm
declares only its own parameters and inherits the loop's
(:class:`~textrl.config.schema.LoopConfig`, through :class:`textrl.algorithms.base.Algorithm`).

Reserved keys under ``policy.``, ``reward.``, ``algo.`` and ``interaction.`` (not passed to the
factory): ``name``. Parameters
textrl passes itself (not config keys): :data:`INJECTED_KEYS`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import types
import typing
from dataclasses import field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from textrl.errors import TextRLError

RESERVED_KEYS = ("name",)

PLUGIN_GROUPS = {"policy": "policies", "reward": "rewards", "algo": "algorithms", "interaction": "interactions"}
"""Config group → the :class:`textrl.plugins.PluginRegistry` table whose factories are its options:
``<group>=<name>`` picks a factory, the keys under ``<group>.`` are its keyword arguments."""

INJECTED_KEYS = ("rewards", "sources")
"""Factory parameters textrl supplies itself, never config keys: ``rewards``, the reward-model
table (name → factory), for a reward factory that builds other reward models
(``reward=composite``); ``sources``, the run's :class:`~textrl.data_sources.DataSources` (the
generated datasets ``"<name>:<split>"`` names), for a factory that reads data
(``interaction=dialogue``)."""


@dataclasses.dataclass(frozen=True)
class FactoryParameters:
    """What a factory accepts.

    Attributes:
        parameters: keyword parameters in order (those a class passes on to its base class first,
            then its own; a name the subclass restates keeps its place and takes the subclass's
            default).
        hints: resolved annotations by parameter name (missing where none resolve).
        takes_any: the chain ends in ``**kwargs`` that go nowhere in particular (any key accepted).
        injected: the :data:`INJECTED_KEYS` it takes (supplied by :func:`build_plugin`).
    """

    parameters: tuple[inspect.Parameter, ...]
    hints: dict[str, Any]
    takes_any: bool
    injected: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        """The accepted parameter names."""
        return [p.name for p in self.parameters]


def _hints(function) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:
        return {}


def factory_parameters(factory) -> FactoryParameters:
    """The keyword parameters ``factory`` accepts (``self`` and ``*args`` left out); for a class,
    ``**kwargs`` of an ``__init__`` are followed to the next ``__init__`` in the MRO.

    Args:
        factory: a function or a class.
    """
    if not inspect.isclass(factory):
        chain = [factory]
    else:
        chain = [c.__init__ for c in factory.__mro__ if "__init__" in vars(c) and c is not object]
        if not chain:
            chain = [factory]
    declared: list[tuple[list[inspect.Parameter], dict[str, Any]]] = []  # most derived first
    injected: set[str] = set()
    takes_any = False
    for function in chain:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            takes_any = True
            break
        declared.append(
            (
                [
                    p
                    for p in signature.parameters.values()
                    if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                    and p.name != "self"
                    and p.name not in INJECTED_KEYS
                ],
                _hints(function),
            )
        )
        injected.update(name for name in signature.parameters if name in INJECTED_KEYS)
        takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        if not takes_any:
            break
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for own, own_hints in reversed(declared):  # base class first; a subclass restating a name wins
        for p in own:
            params[p.name] = p
            if p.name in own_hints:
                hints[p.name] = own_hints[p.name]
    return FactoryParameters(tuple(params.values()), hints, takes_any, tuple(sorted(injected)))


def _omegaconf_type(hint: Any) -> Any:
    """Map a Python annotation to one OmegaConf can validate, else ``Any``."""
    simple = (int, float, bool, str)
    if hint in simple or dataclasses.is_dataclass(hint):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2 and (rest[0] in simple or dataclasses.is_dataclass(rest[0])):
            return Optional[rest[0]]
        return Any
    if origin in (list, tuple, typing.List) and args and args[0] in simple:
        return list[args[0]]
    return Any


def signature_schema(kind: str, name: str, factory) -> type:
    """A dataclass whose fields are ``factory``'s keyword parameters (:func:`factory_parameters`,
    plus reserved ``name``).

    Parameters without a default become required (``???``); a dataclass default becomes a
    nested structured node; a dict default is left unset (``???``, the factory's default applies
    unless the config sets one); annotations OmegaConf cannot check become ``Any``.
    """
    accepted = factory_parameters(factory)
    fields_ = [("name", str, field(default=name))]
    for p in accepted.parameters:
        if p.name in RESERVED_KEYS:
            continue
        hint = _omegaconf_type(accepted.hints.get(p.name, Any))
        default = p.default
        if default is p.empty:
            spec = field(default=MISSING)
        elif isinstance(default, dict):
            # Left missing in the schema: Hydra merges a dict override key-wise, and struct mode
            # would reject new keys; an unset value means "use the factory's own default".
            spec, hint = field(default=MISSING), Any
        elif dataclasses.is_dataclass(default) or isinstance(default, list):
            spec = field(default_factory=lambda d=default: copy.deepcopy(d))
            hint = type(default) if dataclasses.is_dataclass(default) else Any
        else:
            spec = field(default=default)
            if default is None and hint is not Any and typing.get_origin(hint) is not typing.Union:
                hint = Optional[hint]
        fields_.append((p.name, hint, spec))
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return dataclasses.make_dataclass(f"{kind}_{safe}", fields_)


def plugin_tables(registry) -> list[tuple[str, dict]]:
    """``(group, {name: factory})`` for each group of :data:`PLUGIN_GROUPS`, from ``registry``."""
    return [(group, getattr(registry, table)) for group, table in PLUGIN_GROUPS.items()]


def register_plugin_configs(registry) -> None:
    """Store one ConfigStore option per factory the plugins provide, in its group (``policy``,
    ``reward``, ``algo``, ``interaction``), so ``reward=<name>`` needs no YAML file."""
    cs = ConfigStore.instance()
    for kind, table in plugin_tables(registry):
        for name, factory in table.items():
            cs.store(group=kind, name=name, node=signature_schema(kind, name, factory))


def factory_kwargs(node) -> dict:
    """Plain keyword arguments for a plugin factory from its node (``policy``, ``reward``, ``algo``,
    ``interaction``)."""
    params = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    return {k: v for k, v in params.items() if k not in RESERVED_KEYS and v != MISSING}


def accepted_parameters(factory) -> list[str]:
    """The keyword parameters a plugin factory accepts (:func:`factory_parameters`)."""
    return factory_parameters(factory).names


def check_plugin_overrides(overrides: list[str], registry, defaults: dict[str, str]) -> None:
    """Reject ``<group>.<key>=`` overrides (``policy``, ``reward``, ``algo``, ``interaction``) that the
    selected factory does not accept, listing the accepted keys (Hydra would only say the key is
    not in the struct).

    Args:
        overrides: command-line overrides (``reward=regex``, ``reward.mode=any``, ``-m`` sweeps
            such as ``algo=ppo,grpo`` are split on commas).
        registry: the :class:`textrl.plugins.PluginRegistry`.
        defaults: the option each group uses when the command line does not pick one.

    Raises:
        TextRLError: naming the key, the selected plugin and the accepted keys.
    """
    for kind, table in plugin_tables(registry):
        names = [defaults.get(kind)]
        for arg in overrides:
            if arg.startswith(f"{kind}="):
                names = [n.strip() for n in arg.split("=", 1)[1].split(",")]
        for arg in overrides:
            match = re.match(rf"^[+~]*{kind}\.([A-Za-z_]\w*)", arg)
            if not match:
                continue
            key = match.group(1)
            for name in names:
                if name not in table:
                    continue  # a YAML preset or an unknown name: Hydra reports it
                accepted = factory_parameters(table[name])
                if key not in accepted.names and key not in RESERVED_KEYS and not accepted.takes_any:
                    raise TextRLError(
                        f"{kind}.{key}: not a parameter of {kind}={name}; expected one of "
                        f"{list(RESERVED_KEYS) + accepted.names}"
                    )


def build_plugin(kind: str, node, table: dict, *, sources=None):
    """Call the factory named ``node.name`` with the node's other keys, and the
    :data:`INJECTED_KEYS` it declares: for a reward factory that takes ``rewards``, ``table`` as
    that; for any factory that takes ``sources``, ``sources`` (a
    :class:`~textrl.data_sources.DataSources`, or ``None``).

    Raises:
        TextRLError: unknown name (valid ones listed), an unknown parameter (accepted ones
            listed), or a factory that rejects its arguments.
    """
    name = node["name"]
    if name not in table:
        raise TextRLError(f"{kind}={name}: no such {kind}; expected one of {sorted(table)}")
    factory, kwargs = table[name], factory_kwargs(node)
    accepted = factory_parameters(factory)
    unknown = sorted(set(kwargs) - set(accepted.names))
    if unknown and not accepted.takes_any:
        raise TextRLError(f"{kind}.{unknown[0]}: not a parameter of {kind}={name}; expected one of {accepted.names}")
    missing = [p.name for p in accepted.parameters if p.default is p.empty and p.name not in kwargs]
    if missing:
        raise TextRLError(
            f"{kind}.{missing[0]}: required by {kind}={name} but not set; expected {kind}.{missing[0]}=<value>"
        )
    if "rewards" in accepted.injected and kind.split(".")[0] == "reward":
        kwargs["rewards"] = table
    if "sources" in accepted.injected:
        kwargs["sources"] = sources
    return factory(**kwargs)
