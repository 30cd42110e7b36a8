"""The configuration reference, generated from the code: every key of the composed config with
its default, for the main job and for each option of each config group (``policy=tinystories``,
``reward=learned``, ``algo=grpo`` ...). ``python -m textrl.reference`` prints it as Markdown.

The defaults come from where they live: the structured-config dataclasses, the option YAML files
in ``conf/`` and the plugin factories' signatures, composed by Hydra exactly as the ``textrl``
command composes them, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json

from omegaconf import OmegaConf

#: config groups whose options the reference lists (``experiment`` presets change many groups
#: at once and are listed by name only)
GROUPS = ("policy", "data", "env", "reward", "algo", "interaction", "logger", "trainer")
REQUIRED = "(required)"


def _leaves(node: dict, prefix: str = ""):
    """``(dotted key, value)`` for every non-mapping value of the nested dict ``node``; an empty
    mapping is a leaf (``{}``)."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _compose(overrides: list[str]) -> dict:
    """``train`` composed with ``overrides`` as a plain dict, interpolations unresolved and unset
    values as ``"???"``."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_module("textrl.conf", version_base="1.3"):
            cfg = hydra.compose("train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg, resolve=False)


def group_options() -> dict[str, list[str]]:
    """Every option of each group in :data:`GROUPS`, sorted by name: the YAML files in
    ``conf/<group>/`` and the options in Hydra's config store (the plugins' reward models and
    algorithms, once :func:`textrl.config.register_plugin_configs` has run)."""
    from hydra.core.config_store import ConfigStore
    from importlib.resources import files

    conf = files("textrl.conf")
    options = {}
    for group in GROUPS:
        names = (
            {p.name[:-5] for p in conf.joinpath(group).iterdir() if p.name.endswith(".yaml")}
            if conf.joinpath(group).is_dir()
            else set()
        )
        names |= {n[:-5] for n in ConfigStore.instance().repo.get(group, {}) if n.endswith(".yaml")}
        options[group] = sorted(names)
    return options


def reference_entries(registry=None) -> dict[str, dict[str, object]]:
    """The reference as data: ``{"": {key: default}}`` for the main job (``textrl`` with no
    overrides) and ``{"<group>=<option>": {key: default}}`` for each option the main job does not
    pick, holding every key of that group as ``textrl <group>=<option>`` composes it. A value is a
    YAML scalar (an interpolation such as ``${policy.model}`` unresolved), a list, ``{}`` or
    ``"???"`` (required, no default).

    Args:
        registry: the :class:`textrl.plugins.PluginRegistry` whose options are listed (default:
            the installed plugins, as the ``textrl`` command loads them).
    """
    from textrl.config import register_configs, register_plugin_configs
    from textrl.plugins import load_plugins

    registry = registry or load_plugins()
    register_configs()
    register_plugin_configs(registry)
    main = dict(_leaves(_compose([])))
    entries = {"": main}
    for group, names in group_options().items():
        for name in names:
            table = {key: value for key, value in _leaves(_compose([f"{group}={name}"])) if key.split(".")[0] == group}
            if table != {key: value for key, value in main.items() if key.split(".")[0] == group}:
                entries[f"{group}={name}"] = table
    return entries


def _text(value) -> str:
    """A default as it would be typed on the command line."""
    if value == "???":
        return REQUIRED
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def reference_markdown(entries: dict[str, dict[str, object]]) -> str:
    """:func:`reference_entries`' ``entries`` as Markdown: one ``key | default`` table for the main
    job, then one per option; ``|`` in a value is escaped."""
    lines = []
    for option, table in entries.items():
        lines += [f"### {f'`{option}`' if option else 'main job'}", "", "| key | default |", "| --- | --- |"]
        lines += [f"| `{key}` | {_text(value).replace('|', chr(92) + '|')} |" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def config_reference(registry=None) -> str:
    """The configuration reference as Markdown: :func:`reference_markdown` of
    :func:`reference_entries` for ``registry`` (default: the installed plugins)."""
    return reference_markdown(reference_entries(registry))


if __name__ == "__main__":
    print(config_reference())
