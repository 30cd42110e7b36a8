"""textrl's configuration, in one leaf package (it imports no model, env or stage code).

- :mod:`textrl.config.schema`: the structured configs (dataclasses in Hydra's ConfigStore) for
  every config group, each field with its default and its check; :class:`LoopConfig` (with
  :class:`KLConfig`) holds the optimisation loop's hyperparameters every algorithm inherits.
- :mod:`textrl.config.choices`: every choice setting's values, defined once.
- :mod:`textrl.config.checks`: the check vocabulary (:func:`number`, :func:`integer`,
  :func:`one_of`, :class:`Check`) for the schema and for plugins' ``config_checks``.
- :mod:`textrl.config.validate`: :func:`check_config`, run once after composition, before
  anything loads.
- :mod:`textrl.config.plugin_options`: the plugin kinds' options (policies, reward models,
  algorithms, interactions) from their factories' signatures (:func:`signature_schema`,
  :func:`build_plugin`).
- :mod:`textrl.config.store`: the ConfigStore entry and textrl's OmegaConf resolvers.

The primary config ``conf/train.yaml`` starts from :class:`TrainConfig`, so a typo such as
``algo.lrr=1`` or a wrong type fails at composition with the key's name. One source per default:
the schema's dataclasses for the config groups, the factory's signature for a plugin's
parameters; the YAML files in ``conf/`` only pick options and set what an option changes
(``tests/unit/test_defaults.py`` holds them to that).
"""

from textrl.config.checks import Check, integer, matches, number, one_of
from textrl.config.plugin_options import (
    PLUGIN_GROUPS,
    RESERVED_KEYS,
    accepted_parameters,
    build_plugin,
    check_plugin_overrides,
    factory_kwargs,
    factory_parameters,
    plugin_tables,
    register_plugin_configs,
    signature_schema,
)
from textrl.config.schema import (
    DataConfig,
    EnvConfig,
    EvalConfig,
    KLConfig,
    LoggerConfig,
    LoopConfig,
    LoraSettings,
    RMConfig,
    RolloutConfig,
    SFTConfig,
    TrainConfig,
    TrainerConfig,
)
from textrl.config.store import package_dir, register_configs, register_resolvers
from textrl.config.validate import CHECKS, check_config, check_plugin_params

__all__ = [
    "CHECKS",
    "PLUGIN_GROUPS",
    "RESERVED_KEYS",
    "Check",
    "DataConfig",
    "EnvConfig",
    "EvalConfig",
    "KLConfig",
    "LoggerConfig",
    "LoopConfig",
    "LoraSettings",
    "RMConfig",
    "RolloutConfig",
    "SFTConfig",
    "TrainConfig",
    "TrainerConfig",
    "accepted_parameters",
    "build_plugin",
    "check_config",
    "check_plugin_overrides",
    "check_plugin_params",
    "factory_kwargs",
    "factory_parameters",
    "integer",
    "matches",
    "number",
    "one_of",
    "package_dir",
    "plugin_tables",
    "register_configs",
    "register_plugin_configs",
    "register_resolvers",
    "signature_schema",
]
