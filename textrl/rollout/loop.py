"""The one rollout loop: step a vector env and a decode engine together until every episode has
ended (:func:`play`), used by every batch the collector gathers and by every branch rollout.

On a step where some slots' turns ended and the env appended tokens (``info["env_tokens"]``, a
multi-turn episode), the next forward is one ragged extend over ``(N, 1 + k_max)``
(:func:`ragged_block`): each slot's sampled token, then its env tokens, left-aligned and masked;
the next draw comes from each slot's last real token, so the prefix is never recomputed and
nothing the policy sampled is decoded and re-encoded. Every other step is the plain token step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def play(env, engine, draw, episodes: "Episodes", on_step: Callable | None = None):
    """Step ``env`` (a :class:`~textrl.envs.TokenGenVectorEnv` in ``DISABLED`` autoreset mode) with
    the tokens ``engine`` draws, starting from ``draw``, until ``episodes`` says every episode has
    ended. ``on_step(step, env, engine, draw, info)`` (optional) is called before each step with the
    pending draw and the previous step's ``info`` (a branch point, :mod:`textrl.rollout.branching`).

    Returns:
        ``(obs, draws, rewards)``: the final observation, the draw of every step (each ``(N, 1)``)
        and, for the steps with an ``info`` (something ended), that step's ``(N,)`` rewards by step
        index; every other step paid nothing.
    """
    draws, rewards, info = [], {}, {}
    active = ~env.done[:, None]
    for step in range(env.width - env.max_prompt_tokens):
        if on_step is not None:
            on_step(step, env, engine, draw, info)
        draws.append(draw)
        obs, reward, terminated, truncated, info = env.step(draw.tokens)
        if not info:  # nothing ended on this step: no reward, no env tokens
            draw = engine.advance(draw.tokens, active)
            continue
        rewards[step] = reward
        if "_score" in info:  # some episodes ended on this step
            active = active & ~(terminated | truncated)[:, None]
            if episodes.record(info):
                break
        if "env_tokens" in info:
            draw = engine.extend(*ragged_block(draw.tokens, active, info["env_tokens"]))
        else:
            draw = engine.advance(draw.tokens, active)
    return obs, draws, rewards


def ragged_block(tokens: torch.Tensor, active: torch.Tensor, env_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(N, 1 + k_max)`` block of new tokens for the engines' ``extend``.

    Args:
        tokens: ``(N, 1)`` long, the tokens just sampled.
        active: ``(N, 1)`` bool, slots whose episode is still running.
        env_tokens: N entries, each a list of appended ids or ``None``.

    Returns:
        ``(ids, mask)``, both ``(N, 1 + k_max)`` long: row i is ``[token_i, *env_tokens[i], pad...]``
        with mask 1 on those (all 0 for an inactive slot).
    """
    n, dev = tokens.shape[0], tokens.device
    width = 1 + max(len(e) for e in env_tokens if e is not None)
    extra = torch.zeros(n, width - 1, dtype=torch.long)
    extra_mask = torch.zeros(n, width - 1, dtype=torch.long)
    for i, e in enumerate(env_tokens):
        if e is not None:
            extra[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            extra_mask[i, : len(e)] = 1
    ids = torch.cat([tokens, extra.to(dev)], 1)
    mask = torch.cat([active.long(), extra_mask.to(dev) * active.long()], 1)
    return ids, mask


class Episodes:
    """The per-episode results of one batch, gathered from the env's step ``info`` (host side).

    Args:
        prompts: the N prompts, from ``reset``'s ``info["prompt"]``.
        running: episodes still running (default: all N; a branch starts some slots finished).

    ``record(info)`` copies the rows flagged in the info's ``_score`` mask: ``response`` (str),
    ``score`` (float32), each ``reward/<component>`` (float32) and ``reward_details`` (dict or
    ``None``), and returns whether every episode has now ended.
    """

    def __init__(self, prompts: list[str], running: int | None = None):
        n = len(prompts)
        self.prompts = prompts
        self.responses: list[str] = [""] * n
        self.scores = np.zeros(n, dtype=np.float32)
        self.components: dict[str, np.ndarray] = {}
        self.details: list[dict | None] = [None] * n
        self.remaining = n if running is None else running

    def record(self, info: dict) -> bool:
        """Copy the rows of the episodes ``info`` flags as ended; ``True`` once every episode has."""
        ended = info["_score"]
        self.scores[ended] = info["score"][ended]
        for i in np.flatnonzero(ended):
            self.responses[i] = info["response"][i]
            if "reward_details" in info:
                self.details[i] = info["reward_details"][i]
        for key, values in info.items():
            if key.startswith("reward/"):
                self.components.setdefault(key[len("reward/") :], np.zeros(len(self.prompts), np.float32))[ended] = (
                    values[ended]
                )
        self.remaining -= int(ended.sum())
        return self.remaining == 0
