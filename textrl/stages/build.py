"""Building what a rollout needs from the config, the one place ``stage=rl`` and ``stage=eval`` share.

:func:`build_rollout_parts` loads the tokenizer and the policy (through the ``policy=<name>``
plugin's loader, :func:`load_policy`, which stage=sft uses too), the reference model, the prompts,
the reward model and the vector env; :func:`make_collector` puts a
:class:`~textrl.rollout.collector.RolloutCollector` on top with ``rollout.*`` (sampling, engine).
The RL stage builds its algorithm between the two (it decides ``samples_per_prompt``); the eval
stage makes one collector per model it compares.

Data sources: the stage builds one :class:`~textrl.data_sources.DataSources` from its plugin
registry (``DataSources(registry.datasets)``) and passes it as ``sources`` to everything here that
reads data (the prompts, the interaction), so ``data.prompts=arithmetic:train`` and
``interaction.path=hh_dialogues:train`` resolve through that table and nothing below reads a
global registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from textrl.config import build_plugin
from textrl.data_sources import DataSources
from textrl.prompts import load_prompts
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies.contract import Policy, PolicyLoader, check_loader, check_policy
from textrl.policies.loading import DTYPES, load_causal_lm
from textrl.policies.reference import make_reference
from textrl.policies.sampling import SamplingConfig
from textrl.rollout.collector import RolloutCollector
from textrl.training_examples import format_prompt


def build_policy_loader(cfg, registry) -> PolicyLoader:
    """The :class:`~textrl.policies.contract.PolicyLoader` ``policy=<name>`` selects, built with the
    keys under ``policy.`` (see :func:`textrl.config.build_plugin`).

    Raises:
        TextRLError: an unknown policy or parameter, or a factory that returns no loader.
    """
    node = OmegaConf.to_container(cfg.policy, resolve=True)
    loader = build_plugin("policy", node, registry.policies)
    return check_loader(loader, f"policy={node['name']}")


def load_policy(cfg, registry, device, stage: str, dropout: float | None = None) -> tuple[object, Policy]:
    """``(tokenizer, policy)`` of ``policy=<name>`` for ``stage`` (``sft``, ``rl`` or ``eval``; see
    :meth:`~textrl.policies.contract.PolicyLoader.load_policy`), on ``device``; ``dropout`` is the
    rate stage=sft trains with (``None``: the policy's own).

    Raises:
        TextRLError: whatever the loader raises, or a policy that does not keep the contract
            (:func:`~textrl.policies.contract.check_policy`).
    """
    loader = build_policy_loader(cfg, registry)
    tokenizer = loader.load_tokenizer()
    policy = loader.load_policy(stage=stage, tokenizer=tokenizer, device=device, dropout=dropout)
    return tokenizer, check_policy(policy, f"policy={cfg.policy.name}", tokenizer)


def weight_dtype(policy: Policy) -> str:
    """The name of the dtype of ``policy.lm``'s floating-point weights (``float32`` when it has none
    :func:`~textrl.policies.loading.load_causal_lm` loads in), so π_ref loads as the policy did."""
    dtype = next((p.dtype for p in policy.lm.parameters() if p.is_floating_point()), torch.float32)
    return next((name for name, value in DTYPES.items() if value == dtype), "float32")


def load_prompt_split(cfg, tokenizer, *, sources: DataSources) -> tuple[list[str], list[str]]:
    """``(train_prompts, eval_prompts)``: ``data.eval_prompts`` holds out the last k prompts for
    ``stage=eval``. Prompts are raw text; :func:`prompt_formatter` writes them for the policy.
    ``sources`` resolves a generated ``data.prompts`` (``arithmetic:train``).

    Raises:
        TextRLError: holding out every prompt.
    """
    d = cfg.data
    prompts = load_prompts(
        d.prompts,
        text_field=d.text_field,
        split=d.split,
        max_prompts=d.max_prompts,
        prefix_tokens=d.prefix_tokens,
        tokenizer=tokenizer,
        seed=cfg.seed,
        sources=sources,
    )
    k = d.eval_prompts or 0
    if k >= len(prompts):
        raise TextRLError(f"data.eval_prompts: got {k}; expected fewer than the {len(prompts)} prompts")
    return (prompts[:-k], prompts[-k:]) if k else (prompts, [])


def eval_prompts(cfg, tokenizer, *, sources: DataSources) -> list[str]:
    """``stage=eval``'s prompts: ``eval.num_prompts`` drawn at random (seeded) from ``eval.prompts``
    when set (e.g. IMDB's test reviews, sorted by label on disk); else the ``data.eval_prompts``
    held out from RL, or the first of ``data.prompts``. ``sources`` resolves generated ones
    (``arithmetic:heldout``)."""
    d = cfg.data
    if cfg.eval.prompts:
        return load_prompts(
            cfg.eval.prompts,
            text_field=d.text_field,
            split=d.split,
            sample=cfg.eval.num_prompts,
            prefix_tokens=d.prefix_tokens,
            tokenizer=tokenizer,
            seed=cfg.seed,
            sources=sources,
        )
    train_prompts, held_out = load_prompt_split(cfg, tokenizer, sources=sources)
    return (held_out or train_prompts)[: cfg.eval.num_prompts]


def prompt_formatter(cfg, tokenizer):
    """``str -> str`` writing a raw prompt in ``data.prompt_format`` after ``data.system_prompt``
    (None when the format is ``none``)."""
    if cfg.data.prompt_format == "none":
        return None
    fmt, system = cfg.data.prompt_format, cfg.data.system_prompt
    format_prompt(tokenizer, "check", fmt, system)  # fail early on a bad format
    return lambda prompt: format_prompt(tokenizer, prompt, fmt, system)


def build_reward(cfg, registry, device):
    """The reward model for ``cfg.reward`` (``device: auto`` becomes the run's device)."""
    node = OmegaConf.to_container(cfg.reward, resolve=True)
    if node.get("device") == "auto":
        node["device"] = str(device)  # the run's device, not a second guess
    return build_plugin("reward", node, registry.rewards)


def sampling_config(cfg) -> SamplingConfig:
    """``rollout.temperature/top_k/top_p`` as a :class:`SamplingConfig` (which validates them)."""
    return SamplingConfig(cfg.rollout.temperature, cfg.rollout.top_k, cfg.rollout.top_p)


def make_env(
    cfg, tokenizer, prompts: list[str], reward_model, num_envs: int, device, interaction=None
) -> TokenGenVectorEnv:
    """The vector env of ``env.*`` over ``prompts``, in the ``DISABLED`` autoreset mode a collector
    needs, returning views of its buffers (the collector copies once per batch); with an
    ``interaction`` (:func:`build_interaction`) its episodes are multi-turn (``env.max_turns``,
    ``env.max_episode_tokens``, ``env.turn_reward``)."""
    return TokenGenVectorEnv(
        tokenizer,
        prompts,
        reward_model,
        num_envs=num_envs,
        max_new_tokens=cfg.env.max_new_tokens,
        max_prompt_tokens=cfg.env.max_prompt_tokens,
        prompt_truncation=cfg.env.prompt_truncation,
        stop_on_eos=cfg.env.stop_on_eos,
        device=device,
        autoreset_mode="disabled",
        format_prompt=prompt_formatter(cfg, tokenizer),
        copy=False,
        interaction=interaction,
        max_turns=cfg.env.max_turns,
        max_episode_tokens=cfg.env.max_episode_tokens,
        turn_reward=cfg.env.turn_reward,
    )


def check_context(env: TokenGenVectorEnv, policy) -> None:
    """Fail when an episode can outgrow the policy's context: the observation width (prompt +
    ``env.max_episode_tokens``) beyond the model's ``max_position_embeddings`` (when its config has
    one).

    Raises:
        TextRLError: naming ``env.max_episode_tokens`` (or ``env.max_new_tokens`` for a single turn).
    """
    context = getattr(policy.config, "max_position_embeddings", None)
    if not isinstance(context, int) or env.width <= context:
        return
    P, budget = env.max_prompt_tokens, env.width - env.max_prompt_tokens
    key = "env.max_new_tokens" if env.rules.max_turns == 1 else "env.max_episode_tokens"
    raise TextRLError(
        f"{key}: got an episode budget of {budget} tokens after env.max_prompt_tokens={P} ({env.width} in all); "
        f"expected at most {context} in all, the policy's context (max_position_embeddings)"
    )


def build_interaction(cfg, registry, *, sources: DataSources):
    """The interaction ``interaction=<name>`` selects (``None`` without one: single-turn episodes);
    a factory that declares ``sources`` (``dialogue``) receives ``sources``, the table its
    ``"<name>:<split>"`` paths resolve through.

    Raises:
        TextRLError: an unknown interaction or parameter (see :func:`textrl.config.build_plugin`).
    """
    node = cfg.get("interaction")
    if node is None:
        return None
    return build_plugin(
        "interaction", OmegaConf.to_container(node, resolve=True), registry.interactions, sources=sources
    )


def make_collector(
    cfg,
    env: TokenGenVectorEnv,
    policy,
    reference,
    seed: int,
    samples_per_prompt: int = 1,
    chunk_size: int | None = None,
    branching=None,
    engine: str | None = None,
) -> RolloutCollector:
    """A collector with ``rollout.*``'s sampling distribution and decode engine (``engine``
    overrides ``rollout.engine``); ``chunk_size`` rows per π_ref pass (``algo.micro_batch_size``);
    ``branching``: the algorithm's :class:`~textrl.config.schema.BranchConfig` when it needs
    branched estimates."""
    engine = engine or cfg.rollout.engine
    return RolloutCollector(
        env,
        policy,
        reference,
        sampling_config(cfg),
        seed=seed,
        samples_per_prompt=samples_per_prompt,
        engine=engine,
        chunk_size=chunk_size,
        branching=branching,
    )


@dataclass
class RolloutParts:
    """What :func:`build_rollout_parts` built: ``tokenizer``, ``policy`` (a
    :class:`~textrl.policies.contract.Policy`), ``reference`` (π_ref LM), ``reward_model``,
    ``prompts`` (the ones the env draws from) and ``env``."""

    tokenizer: object
    policy: Policy
    reference: torch.nn.Module
    reward_model: object
    prompts: list[str]
    env: TokenGenVectorEnv


def build_rollout_parts(
    cfg, registry, device, stage: str, num_envs: int | None = None, *, sources: DataSources, weights_device=None
) -> RolloutParts:
    """Everything below the collector for ``stage`` (``rl`` or ``eval``), in one order for both.

    - ``rl``: the trainable policy (``policy=<name>``'s loader at stage ``rl``: for ``policy=hf``
      with LoRA adapters when ``policy.lora.r > 0``), π_ref = :func:`make_reference` of it (a
      frozen copy, or the policy with adapters off), the training prompts, and an env of
      ``num_envs`` slots.
    - ``eval``: the policy to evaluate (the loader at stage ``eval``), π_ref = ``eval.reference``
      (loaded in the policy's weight dtype), the held-out prompts (``data.eval_prompts``, else the
      training prompts) cut to ``eval.num_prompts``, and an env with one slot per prompt.

    With ``interaction=<name>`` the env is multi-turn; an interaction with its own ``prompts``
    (``dialogue``) supplies the prompts instead of ``data.*`` (eval: the first ``eval.num_prompts``
    of its held-out ``eval_prompts`` when it has them, else of its ``prompts``). ``sources`` (the
    stage's :class:`~textrl.data_sources.DataSources`) resolves generated data sources in both.
    ``weights_device`` (default ``device``) is where stage=rl loads the policy and π_ref: a sharded
    run loads them on the CPU and shards them onto ``device`` (:mod:`textrl.sharding`).

    Raises:
        TextRLError: whatever loading the parts raises (see their docstrings).
    """
    if stage == "rl":
        tokenizer, policy = load_policy(cfg, registry, weights_device or device, "rl")
        reference = make_reference(policy)  # a frozen copy, or the LoRA policy with its adapters off
        prompts, _ = load_prompt_split(cfg, tokenizer, sources=sources)
    else:
        if cfg.eval.reference is None:
            raise TextRLError(
                f"eval.reference: got null; expected a causal LM for π_ref (a hub id, a directory or a "
                f".gguf path): policy={cfg.policy.name} has no policy.model to default to"
            )
        tokenizer, policy = load_policy(cfg, registry, device, "eval")
        reference = load_causal_lm(
            cfg.eval.reference, cfg.eval.reference_gguf_file, weight_dtype(policy), tokenizer=tokenizer, device=device
        ).eval()
        prompts = eval_prompts(cfg, tokenizer, sources=sources)
        num_envs = len(prompts)
    reward_model = build_reward(cfg, registry, device)
    interaction = build_interaction(cfg, registry, sources=sources)
    if interaction is not None and getattr(interaction, "prompts", None):
        # e.g. dialogue: the conversations it replays (eval: the first ones, one slot each)
        held_out = list(getattr(interaction, "eval_prompts", None) or interaction.prompts)
        prompts = list(interaction.prompts) if stage == "rl" else held_out[: cfg.eval.num_prompts]
        num_envs = num_envs if stage == "rl" else len(prompts)
    env = make_env(cfg, tokenizer, prompts, reward_model, num_envs, device, interaction)
    check_context(env, policy)
    return RolloutParts(tokenizer, policy, reference, reward_model, prompts, env)
