"""Every choice setting's values, defined once; the schema's checks and the code that acts on a
choice both import them from here."""

from __future__ import annotations

STAGES = ("sft", "rm", "rl", "eval", "instructgpt", "rlhf")
"""``stage``: the four InstructGPT stages, the pipeline that runs them in turn (``instructgpt``)
and the same pipeline without SFT (``rlhf``: RM → RL → eval from ``policy.model``)."""

POLICY_DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
"""``policy.dtype``: the weights' dtype when loading (aliases pairwise)."""

PROMPT_TRUNCATIONS = ("left", "error")
"""``env.prompt_truncation``: drop a too-long prompt's first tokens, or stop with an error."""

PROMPT_FORMATS = ("none", "auto", "chat", "plain")
"""``data.prompt_format`` / ``rm.prompt_format``: see :func:`textrl.training_examples.format_prompt`."""

SFT_PROMPT_FORMATS = ("auto", "chat", "plain")
"""``sft.prompt_format``: :data:`PROMPT_FORMATS` without ``none`` (a demonstration has a prompt)."""

ROLLOUT_ENGINES = ("auto", "eager", "compiled")
"""``rollout.engine``: see :mod:`textrl.rollout.engines` (``auto``: compiled on CUDA)."""

TURN_REWARDS = ("final", "model")
"""``env.turn_reward``: multi-turn episodes scored once at the end (``final``) or turn by turn
(``model``); see :mod:`textrl.envs.episode`."""

PRECISIONS = ("fp32", "bf16")
"""``trainer.precision``."""

SHARDINGS = ("none", "fsdp")
"""``trainer.sharding``: every process holds every weight (``none``), or the RL stage's models,
gradients and optimizer state are sharded across the processes with FSDP2 (:mod:`textrl.sharding`)."""

ROLLOUT_GATHERS = ("whole", "per_layer")
"""``trainer.rollout_gather``: how a sharded policy gets its full weights for a rollout
(:mod:`textrl.sharding`)."""

ON_NONFINITE = ("error", "skip")
"""``trainer.on_nonfinite``."""

LOGGERS = ("console", "wandb", "none")
"""``logger.name``."""

WANDB_MODES = ("offline", "online", "disabled", "shared")
"""``logger.mode``."""

RM_OBJECTIVES = ("ranking", "classification")
"""``rm.objective``."""

KL_ESTIMATORS = ("k1", "k2", "k3")
BRANCH_STATES = ("prompt", "turns", "newlines", "tokens")
"""``algo.branch.at``: the states a rollout branches from (the prompt only; the start of every policy
turn; the prompt and every state after a token holding a newline, VinePPO's reasoning steps; every
``algo.branch.every`` actions); see :mod:`textrl.rollout.branching`."""
"""``algo.kl.estimator``: see :func:`textrl.algorithms.kl.kl_penalty`."""

REINFORCE_BASELINES = ("none", "moving_average", "leave_one_out", "same_state")
"""``algo.baseline`` of ``algo=reinforce``."""

VALUE_INITS = ("zeros", "reward_model")
"""``algo.value_init`` of ``algo=ppo``/``ppo_ptx``."""
