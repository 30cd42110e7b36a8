"""Text generation as Gymnasium environments; importing this registers ``textrl/TokenGen-v0``.

``gymnasium.make("textrl/TokenGen-v0", tokenizer=..., prompts=..., reward_model=...,
max_new_tokens=..., max_prompt_tokens=...)`` builds :class:`TokenGenEnv`;
``gymnasium.make_vec("textrl/TokenGen-v0", num_envs=N, vectorization_mode="vector_entry_point", ...)``
builds the batched torch :class:`TokenGenVectorEnv`. Both take ``interaction=`` (a
:class:`textrl.Interaction`), ``max_turns=`` and ``max_episode_tokens=`` for multi-turn episodes
(:mod:`textrl.envs.episode`: a single-turn episode is the case with no interaction).
"""

import gymnasium

from textrl.prompts import builtin_prompts, load_prompts
from textrl.envs.token_env import TokenGenEnv
from textrl.envs.token_vector_env import TokenGenVectorEnv

ENV_ID = "textrl/TokenGen-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="textrl.envs.token_env:TokenGenEnv",
        vector_entry_point="textrl.envs.token_vector_env:TokenGenVectorEnv",
    )

__all__ = ["ENV_ID", "TokenGenEnv", "TokenGenVectorEnv", "builtin_prompts", "load_prompts"]
