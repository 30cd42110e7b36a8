"""The schema: one dataclass per config group, each field with its default and its check.

A field's check (a :class:`~textrl.config.checks.Check`) rides in the field's metadata
(``setting(default, check)``), so the list of settings exists once: :func:`field_checks` reads
the checks back for :func:`textrl.config.validate.check_config`. Choice values come from
:mod:`textrl.config.choices`. The loop's hyperparameters every algorithm shares are
:class:`LoopConfig` (with :class:`KLConfig`); an algorithm's own parameters come from its
factory's signature (:mod:`textrl.config.plugin_options`).

This package is a leaf: it imports no model, env or stage code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from omegaconf import MISSING

from textrl.config import choices as C
from textrl.config.checks import DEVICE, FRACTION, POSITIVE, PREFIX_TOKENS, Check, integer, number, one_of


def setting(default: Any = MISSING, check: Check | None = None, *, factory=None) -> Any:
    """A dataclass field with ``default`` (or ``default_factory=factory``) and ``check`` in its
    metadata (``metadata["check"]``)."""
    metadata = {"check": check} if check is not None else {}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class LoraSettings:
    """``policy.lora.*`` of ``policy=hf`` (:class:`textrl.policies.hf.HFPolicyLoader`): LoRA adapters
    (Hu et al. 2021) trained by RL instead of every weight.

    Attributes:
        r: the adapter rank (0 = no LoRA, full fine-tuning).
        alpha: the scale numerator (updates are scaled by alpha/r).
        dropout: dropout on the adapter input.
        target_modules: the module names to adapt (``None``: peft's default for the architecture,
            e.g. ``q_proj``/``v_proj`` for Llama, ``c_attn`` for GPT-2).
    """

    r: int = setting(0, integer(ge=0, expected="a positive rank (0 turns LoRA off)"))
    alpha: float = setting(16.0, number(gt=0))
    dropout: float = setting(0.0, FRACTION)
    target_modules: Optional[list[str]] = None


@dataclass
class EnvConfig:
    """``env.*``: the token-generation MDP (lengths in tokens).

    Attributes:
        max_new_tokens: tokens the policy may sample per response (per policy turn in a
            multi-turn episode); reaching it truncates the episode.
        max_prompt_tokens: tokens of a prompt kept; a longer prompt follows ``prompt_truncation``.
        prompt_truncation: ``left`` keeps the last ``max_prompt_tokens`` tokens (with a warning),
            ``error`` stops the run.
        stop_on_eos: the tokenizer's EOS token (and a chat template's end-of-turn token) ends the
            policy's turn; without an interaction that terminates the episode.
        max_turns: policy turns per episode (more than 1 needs ``interaction=<name>``).
        max_episode_tokens: tokens after the prompt, policy and env tokens together, per episode
            (``None``: ``max_new_tokens`` for one turn, else ``2 · max_turns · max_new_tokens``;
            without an interaction it can only be ``max_new_tokens``).
        turn_reward: ``final`` (the reward model scores the whole episode once, at its end) or
            ``model`` (it scores each policy turn in context, paid on the turn's last token:
            per-turn rewards for GAE; needs an interaction).

    Multi-turn settings without an interaction are an error (:func:`~textrl.config.checks.episode_budget`);
    the episode model is :mod:`textrl.envs.episode`.
    """

    max_new_tokens: int = setting(18, POSITIVE)
    max_prompt_tokens: int = setting(32, POSITIVE)
    prompt_truncation: str = setting("left", one_of(*C.PROMPT_TRUNCATIONS))
    stop_on_eos: bool = True
    max_turns: int = setting(1, POSITIVE)
    max_episode_tokens: Optional[int] = setting(None, integer(ge=1, optional=True))
    turn_reward: str = setting("final", one_of(*C.TURN_REWARDS))


@dataclass
class DataConfig:
    """``data.*``: the prompts. ``prompts`` is ``builtin``, a .jsonl/.json/.txt/.csv(.gz) path or a
    ``datasets`` id; ``prefix_tokens`` cuts each text to its first k tokens, ``k`` or a range
    ``[min, max]`` (k drawn per text, seeded; checked by :func:`textrl.prompts.prefix_range`);
    ``prompt_format`` is none (raw text), auto, chat or plain (see
    :func:`textrl.training_examples.format_prompt`); ``system_prompt`` is the system message the
    chat template puts before every prompt (sft, rl and eval; none: the template's default);
    ``eval_prompts`` holds out the last k prompts for stage=eval (not trained on).

    Attributes:
        text_field: the field holding the text in a .jsonl/.json/.csv or ``datasets`` source
            (``None``: ``prompt``, ``text``, ``query``, ``instruction`` or ``review``, or the first
            Human turn of hh-rlhf dialogues; see :func:`textrl.prompts.load_prompts`).
        split: the ``datasets`` split to read.
        max_prompts: keep the first k prompts (``None``: all).
    """

    prompts: str = "builtin"
    text_field: Optional[str] = None
    split: str = "train"
    max_prompts: Optional[int] = setting(None, integer(ge=1, optional=True))
    prefix_tokens: Any = setting(None, PREFIX_TOKENS)  # k | [min, max] | null
    prompt_format: str = setting("none", one_of(*C.PROMPT_FORMATS))
    system_prompt: Optional[str] = None
    eval_prompts: Optional[int] = setting(None, integer(ge=0, optional=True))


@dataclass
class RolloutConfig:
    """``rollout.*``: episodes per update, episodes per prompt (k, for group baselines), the
    sampling distribution and the decode ``engine`` (eager | compiled | auto: compiled on CUDA,
    eager elsewhere; see :mod:`textrl.rollout.engines`).

    Attributes:
        batch_size: episodes per update (over all processes).
        samples_per_prompt: k responses per prompt in consecutive rows (RLOO, GRPO baselines).
        temperature: the sampling temperature (> 0).
        top_k: sample among the k most likely tokens (0: off).
        top_p: nucleus sampling: the smallest set of tokens with this much probability (1: off).
    """

    batch_size: int = setting(16, POSITIVE)
    samples_per_prompt: int = setting(1, POSITIVE)
    temperature: float = setting(1.0, number(gt=0))
    top_k: int = setting(0, integer(ge=0, expected="an integer >= 0 (0 turns it off)"))
    top_p: float = setting(1.0, number(gt=0, le=1))
    engine: str = setting("auto", one_of(*C.ROLLOUT_ENGINES))


@dataclass
class TrainerConfig:
    """``trainer.*``: the RL loop. ``updates`` rollout+update iterations; ``sample_every`` writes
    ``samples_per_update`` samples every so many updates; ``threads`` sets torch's CPU threads;
    ``precision`` is ``fp32`` or ``bf16`` (autocast; weights and optimizer stay float32).
    Checkpoints (policy + optimizer state + RNGs, see :mod:`textrl.checkpoint`) are written every
    ``checkpoint_every`` updates and at the end (0: none, except when a stop signal ends the run
    early; a run with ``resume`` set also writes one at the end), the newest ``keep_checkpoints``
    kept; ``resume`` is ``auto`` (the newest checkpoint in the run directory) or a checkpoint path.
    ``on_nonfinite`` is ``error`` (stop, naming the quantity and update) or ``skip`` (warn and drop
    the rest of that batch).

    Attributes:
        save_policy: write the trained policy to ``policy/`` at the end.
        progress_bar: show a progress bar on the console.
        sharding: ``none`` (every process holds every weight; several processes run data-parallel
            with DDP) or ``fsdp`` (PyTorch FSDP2: the policy with its value head, π_ref and the
            reward model are sharded across the processes, and so are the gradients and the AdamW
            state, each process storing about 1/N of them; :mod:`textrl.sharding`). Works with one
            process too. The rl stage only; sft and rm stay data-parallel.
        rollout_gather: with ``sharding=fsdp``, how the rollout gets the policy's full weights:
            ``whole`` gathers them once per rollout and frees them before the update (4 bytes per
            parameter held for the rollout, one all-gather per rollout); ``per_layer`` gathers
            each layer for each forward pass and frees it after (one layer's weights held at a
            time, every weight all-gathered at every token step, the processes decoding in
            lockstep). The reward model is gathered whole for the rollout either way.
        token_budget: stop after the update in which the tokens sampled so far
            (``perf/sampled_tokens``, branches included, all processes) reach this many (``None``:
            run every one of ``updates``); algorithms are compared at equal budgets this way.
    """

    updates: int = setting(25, POSITIVE)
    token_budget: Optional[int] = setting(None, integer(ge=1, optional=True))
    sample_every: int = setting(1, integer(ge=0, expected="an integer >= 0 (0: no samples)"))
    samples_per_update: int = setting(4, integer(ge=0))
    save_policy: bool = True
    progress_bar: bool = True
    threads: Optional[int] = setting(None, integer(ge=1, optional=True))
    precision: str = setting("fp32", one_of(*C.PRECISIONS))
    checkpoint_every: int = setting(0, integer(ge=0, expected="0 (no checkpoints) or a positive number of updates"))
    keep_checkpoints: int = setting(2, POSITIVE)
    resume: Optional[str] = None  # auto | <checkpoint or run dir>
    on_nonfinite: str = setting("error", one_of(*C.ON_NONFINITE))
    sharding: str = setting("none", one_of(*C.SHARDINGS))
    rollout_gather: str = setting("whole", one_of(*C.ROLLOUT_GATHERS))


@dataclass
class LoggerConfig:
    """``logger.*``: ``name`` is console | wandb | none; the rest configures wandb (offline by
    default; ``logger.mode=online`` to sync).

    Attributes:
        project: the wandb project.
        entity: the wandb entity (user or team; ``None``: wandb's default).
        mode: ``offline`` (write locally), ``online`` (sync), ``disabled`` or ``shared``.
        run_name: the wandb run name (``<run_name>-<stage>`` under ``stage=instructgpt``).
        tags: wandb tags.
        table_every: log the samples table every so many updates.
    """

    name: str = setting("console", one_of(*C.LOGGERS))
    project: str = "textrl"
    entity: Optional[str] = None
    mode: str = setting("offline", one_of(*C.WANDB_MODES))
    run_name: Optional[str] = None
    group: Optional[str] = None  # wandb group; stage=instructgpt sets one for its four stages
    tags: list[str] = field(default_factory=list)
    table_every: int = setting(5, POSITIVE)


@dataclass
class SFTConfig:
    """``sft.*`` (``stage=sft``): supervised fine-tuning on demonstrations, loss on response tokens
    only. InstructGPT: 16 epochs, cosine decay, residual dropout 0.2.

    Attributes:
        data: demonstrations: Alpaca (instruction/input/output), prompt/response or chat messages
            (a .json/.jsonl path, a ``datasets`` id or a generated dataset ``<name>:<split>``).
        split: the ``datasets`` split to read.
        max_examples: keep the first k demonstrations (``None``: all).
        eval_fraction: the fraction held out for the eval loss.
        epochs: passes over the demonstrations (fractions allowed).
        lr: the peak learning rate (cosine decay after warmup).
        warmup_ratio: the fraction of the steps spent warming the learning rate up.
        batch_size: demonstrations per optimizer step.
        max_length: tokens per demonstration (prompt and response), longer ones truncated.
        dropout: dropout rate during SFT (InstructGPT: 0.2).
        weight_decay: AdamW weight decay.
        prompt_format: ``auto`` (the chat template when the tokenizer has one), ``chat`` or
            ``plain``.
    """

    data: str = "${oc.env:TEXTRL_ASSETS,../shared/assets}/alpaca-subset/alpaca_small_2k.json"
    split: str = "train"
    max_examples: Optional[int] = setting(None, integer(ge=1, optional=True))
    eval_fraction: float = setting(0.05, FRACTION)
    epochs: float = setting(1.0, number(gt=0))
    lr: float = setting(5.0e-5, number(gt=0))
    warmup_ratio: float = setting(0.03, number(ge=0, le=1))
    batch_size: int = setting(8, POSITIVE)
    max_length: int = setting(256, integer(ge=2))
    dropout: float = setting(0.0, FRACTION)
    weight_decay: float = setting(0.0, number(ge=0))
    prompt_format: str = setting("auto", one_of(*C.SFT_PROMPT_FORMATS))


@dataclass
class RMConfig:
    """``rm.*`` (``stage=rm``): reward-model training. ``objective=ranking`` uses K-wise rankings or
    pairs (InstructGPT eq. 1); ``objective=classification`` trains a classifier on labelled text.
    ``head_tokens`` (classification) keeps the first k and the last (max_length − k) tokens.

    Attributes:
        objective: ``ranking`` or ``classification``.
        model: the backbone's initialisation: an SFT directory, any HF model id or directory
            (default: ``policy.model`` when the policy has one).
        gguf_file: a GGUF file inside ``model`` (``None`` for a Hugging Face directory).
        data: rankings ``{prompt, responses, ranking}``, pairs ``{prompt, chosen, rejected}`` or
            hh-rlhf dialogues (ranking); labelled text (classification).
        eval_data: a held-out file (``None``: hold out ``eval_fraction`` of ``data``).
        split: the ``datasets`` split to read.
        max_examples: keep the first k training examples (``None``: all).
        max_eval_examples: evaluate on at most this many held-out examples.
        eval_fraction: the fraction of ``data`` held out when there is no ``eval_data``.
        epochs: passes over the training examples (fractions allowed).
        lr: the peak learning rate.
        warmup_ratio: the fraction of the steps spent warming the learning rate up.
        batch_size: prompts (ranking) or texts (classification) per optimizer step.
        max_length: tokens per scored text, longer ones truncated.
        normalize: after training, set the head's gain and bias so the reference responses (the
            best-ranked of the training data) score 0 on average.
        unit_std: also scale the scores of the reference responses to unit standard deviation.
        prompt_format: how the prompt is laid out before the response (``plain``, ``chat``,
            ``auto`` or ``none``).
        text_field: the text field of labelled examples (classification).
        label_field: the label field of labelled examples (classification).
        labels: the label names, in class-index order (classification).
    """

    objective: str = setting("ranking", one_of(*C.RM_OBJECTIVES))
    model: Optional[str] = "${oc.select:policy.model,null}"
    gguf_file: Optional[str] = "${oc.select:policy.gguf_file,null}"
    data: str = "${oc.env:TEXTRL_ASSETS,../shared/assets}/hh-rlhf-harmless-test/harmless-base-test.jsonl.gz"
    eval_data: Optional[str] = None
    split: str = "train"
    max_examples: Optional[int] = setting(None, integer(ge=1, optional=True))
    max_eval_examples: Optional[int] = setting(500, integer(ge=1, optional=True))
    eval_fraction: float = setting(0.1, FRACTION)
    epochs: float = setting(1.0, number(gt=0))
    lr: float = setting(1.0e-5, number(gt=0))
    warmup_ratio: float = setting(0.03, number(ge=0, le=1))
    batch_size: int = setting(8, POSITIVE)
    max_length: int = setting(256, integer(ge=2))
    head_tokens: Optional[int] = setting(None, integer(ge=1, optional=True))
    normalize: bool = True
    unit_std: bool = False
    prompt_format: str = setting("plain", one_of(*C.PROMPT_FORMATS))
    text_field: str = "text"
    label_field: str = "label"
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])


@dataclass
class EvalConfig:
    """``eval.*`` (``stage=eval``): the policy (``policy=<name>``) against ``reference`` on held-out
    prompts (``data.*``): mean and median reward, win rate under the reward model, KL, length.
    ``prompts`` (a source like ``data.prompts``, cut like ``data.prefix_tokens``) draws
    ``num_prompts`` held-out prompts at random (seeded) from another file, e.g. IMDB's test
    reviews; ``null`` uses ``data.*``.

    Attributes:
        reference: π_ref, a causal LM: a hub id, a directory or a .gguf path (default:
            ``policy.model`` when the policy has one).
        reference_gguf_file: a GGUF file inside ``reference``.
        samples: how many (prompt, both responses, both rewards) examples ``eval_samples.jsonl`` keeps.
    """

    reference: Optional[str] = "${oc.select:policy.model,null}"
    reference_gguf_file: Optional[str] = "${oc.select:policy.gguf_file,null}"
    prompts: Optional[str] = None
    num_prompts: int = setting(64, POSITIVE)
    samples: int = setting(8, POSITIVE)


@dataclass
class BranchConfig:
    """``algo.branch.*``, branching rollouts (:mod:`textrl.rollout.branching`): at every chosen state
    (``at``: one of :data:`~textrl.config.choices.BRANCH_STATES`; ``every`` actions for ``tokens``)
    the episode is copied ``k`` times, KV cache included, and each copy runs to the end with its own
    sampling stream; the mean and spread of their returns estimate the state's value (VinePPO) or
    give the state's group baseline (same-state groups). Branch tokens are sampled and counted,
    never trained on."""

    k: int = setting(4, integer(ge=2))
    at: str = setting("newlines", one_of(*C.BRANCH_STATES))
    every: int = setting(8, POSITIVE)


@dataclass
class KLConfig:
    """``algo.kl.*``, the KL penalty to π_ref: ``init`` β ≥ 0; ``adaptive`` β (Ziegler et al. 2019)
    steering ``objective/kl`` toward ``target`` (nats per episode, > 0) with gain 1/``horizon``
    (``horizon`` in updates, > 0; see :class:`~textrl.algorithms.kl.AdaptiveKLController`), or a
    fixed β with ``adaptive=false``; ``estimator`` of the per-token penalty: ``k1`` (log π − log π_ref,
    InstructGPT), ``k2`` or ``k3`` (Schulman 2020; see :func:`~textrl.algorithms.kl.kl_penalty`)."""

    init: float = setting(0.05, number(ge=0, expected="β >= 0"))
    adaptive: bool = True
    target: float = setting(6.0, number(gt=0, expected="a KL target > 0 (nats)"))
    horizon: float = setting(5.0, number(gt=0, expected="a positive number of updates"))
    estimator: str = setting("k1", one_of(*C.KL_ESTIMATORS))


@dataclass
class LoopConfig:
    """The hyperparameters of the optimisation loop every algorithm shares
    (:class:`textrl.algorithms.base.Algorithm`; ``algo.<key>`` for whichever algorithm is chosen).
    An algorithm whose default differs restates that one parameter in its own signature.

    Attributes:
        lr: AdamW learning rate (> 0).
        kl: the KL penalty's β settings (:class:`KLConfig`).
        epochs: passes over each rollout batch (≥ 1).
        minibatch_size: episodes per optimizer step (≥ 1; must divide the batch).
        micro_batch_size: episodes per forward/backward pass (gradient accumulation inside a
            minibatch); ``None`` = the whole minibatch in one pass.
        max_grad_norm: clip the global gradient norm to this (``None`` = no clipping).
        weight_decay: AdamW weight decay (≥ 0).
    """

    lr: float = setting(8.0e-5, number(gt=0))
    kl: KLConfig = field(default_factory=KLConfig)
    epochs: int = setting(1, POSITIVE)
    minibatch_size: int = setting(16, POSITIVE)
    micro_batch_size: Optional[int] = setting(None, integer(ge=1, optional=True))
    max_grad_norm: Optional[float] = setting(1.0, number(gt=0, optional=True))
    weight_decay: float = setting(0.0, number(ge=0))


REWARD_SHARED_CHECKS: dict[str, Check] = {"batch_size": POSITIVE, "device": DEVICE}
"""Checks of the ``reward.<key>`` parameters several reward factories (built-in or plugin) share,
applied to whichever reward model has the key (its other parameters come from its signature)."""


@dataclass
class TrainConfig:
    """The whole run: ``stage`` (sft | rm | rl | eval | instructgpt), ``seed``, ``device`` (auto | cpu | cuda | cuda:N) and one
    node per config group.

    Attributes:
        stage: what runs: ``sft``, ``rm``, ``rl``, ``eval``, or ``instructgpt`` (the four in turn).
        seed: seeds python, numpy, torch, the env's prompt draws and token sampling; the same seed
            and config give the same run.
        device: ``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    stage: str = setting("rl", one_of(*C.STAGES))
    seed: int = setting(0, integer(ge=0, lt=2**32))  # numpy's seed range
    device: str = setting("auto", DEVICE)
    policy: Any = MISSING  # policy=<name> (textrl_policies plugins; the presets in conf/policy pick hf)
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


def field_checks(schema: type, prefix: str = "") -> Iterator[tuple[str, Check]]:
    """``(dotted key, check)`` for every field of the dataclass ``schema`` (nested dataclasses
    included) whose metadata carries a check, in field order."""
    for f in dataclasses.fields(schema):
        if "check" in f.metadata:
            yield prefix + f.name, f.metadata["check"]
        nested = f.type if isinstance(f.type, type) else _NESTED.get(f.type)
        if nested is not None and dataclasses.is_dataclass(nested):
            yield from field_checks(nested, f"{prefix}{f.name}.")


_NESTED = {
    cls.__name__: cls
    for cls in (
        LoraSettings,
        EnvConfig,
        DataConfig,
        RolloutConfig,
        TrainerConfig,
        LoggerConfig,
        SFTConfig,
        RMConfig,
        EvalConfig,
        KLConfig,
        LoopConfig,
    )
}
"""Field types by name: with ``from __future__ import annotations`` a field's type is its name."""
