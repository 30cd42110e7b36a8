"""Rollouts of multi-turn episodes (a :class:`~textrl.envs.token_vector_env.TokenGenVectorEnv`
with an interaction): the tokens the env appends go into the KV cache, never recomputing the prefix.

Each step draws one token per slot (either decode engine, :mod:`textrl.rollout.engines`) and steps
the env. On a step where some slots' turns ended and the interaction appended tokens
(``info["env_tokens"]``), the next forward is one ragged extend over ``(N, 1 + k_max)``: each slot's
sampled token, then its env tokens, left-aligned and masked (the engine's ``extend``); the next draw
comes from each slot's last real token. Steps without insertions are the single-turn token step.
The compiled engine's static cache is sized ``P + 2 · env.max_episode_tokens`` (room for the
masked columns of ragged blocks; see :mod:`textrl.rollout.engines`).

Each draw's log-probs and value are written at the response column its token went to (the env's
``lengths`` before the step), and each step's env reward at the same column, so a turn's reward
sits on its last action token. The batch's ``response_mask`` is the observation's ``action_mask``.
"""

from __future__ import annotations

import torch

from textrl.rollout.buffer import RolloutBatch


@torch.no_grad()
def collect_multiturn(collector, prompts: list[str] | None = None) -> RolloutBatch:
    """:meth:`RolloutCollector.collect` for an env with an interaction (see the module docstring).

    Raises:
        TextRLError: as :meth:`RolloutCollector.collect` (a failed compile under
            ``rollout.engine=compiled``, a prompt too wide for the static cache).
    """
    from textrl.rollout.collector import Episodes

    env = collector.env
    P, n, T = env.max_prompt_tokens, env.num_envs, env.max_episode_tokens
    vocab = int(env.single_action_space.n)
    options = {"prompts": prompts} if prompts is not None else {"group_size": collector.samples_per_prompt}
    obs, info = env.reset(seed=collector._reset_seed, options=options)
    collector._reset_seed = None
    episodes = Episodes(list(info["prompt"]))
    collector.engine = collector._engine(vocab, n, P + 2 * T)
    engine, dev = collector.engine, env.device
    draw = engine.start(obs["input_ids"][:, :P], obs["attention_mask"][:, :P])
    buffers = {
        name: torch.zeros(n, T, device=dev) for name in ("logprobs", "untruncated_logprobs", "values", "rewards")
    }
    rows = torch.arange(n, device=dev)
    active = torch.ones(n, 1, dtype=torch.bool, device=dev)
    for _ in range(T):
        col = env.lengths.clamp(max=T - 1)  # the response column this step's token goes to
        keep = active[:, 0]
        for name in ("logprobs", "untruncated_logprobs", "values"):
            buf = buffers[name]
            buf[rows, col] = torch.where(keep, getattr(draw, name)[:, 0], buf[rows, col])
        obs, rewards, terminated, truncated, info = env.step(draw.tokens)
        buffers["rewards"][rows, col] += torch.where(keep, rewards, 0.0)
        if "_score" in info:  # some episodes ended on this step
            active = active & ~(terminated | truncated)[:, None]
            if episodes.record(info):
                break
        if "env_tokens" in info:
            draw = engine.extend(*ragged_block(draw.tokens, active, info["env_tokens"]))
        else:
            draw = engine.advance(draw.tokens, active)
    return multiturn_batch(collector, obs, buffers, episodes, vocab)


def ragged_block(tokens: torch.Tensor, active: torch.Tensor, env_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(N, 1 + k_max)`` block of new tokens for :meth:`KVCacheDecoder.extend`.

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


def multiturn_batch(collector, obs, buffers: dict, episodes, vocab: int) -> RolloutBatch:
    """The :class:`RolloutBatch` of finished multi-turn episodes: ``[left-padded prompt | policy and
    env tokens, right-padded]`` with ``action_mask`` = ``response_mask`` from the observation."""
    P = collector.env.max_prompt_tokens
    input_ids, attention_mask, lengths = collector.final_layout(obs)
    T = int(lengths.max())
    action_mask = obs["action_mask"][:, P : P + T].float()
    logprobs, untruncated_logprobs, values, rewards = (
        buffers[k][:, :T] * action_mask for k in ("logprobs", "untruncated_logprobs", "values", "rewards")
    )
    ref_logprobs = collector.reference_logprobs(input_ids, attention_mask, untruncated_logprobs, action_mask, vocab)
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=action_mask,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        untruncated_logprobs=untruncated_logprobs,
        values=values,
        rewards=rewards,
        **collector.episode_fields(episodes, vocab),
        action_mask=action_mask,
    )


def turn_rewards(batch: RolloutBatch) -> list[list[float]]:
    """Each episode's reward per policy turn, read from a multi-turn batch: ``batch.rewards`` at the
    last action token of every run of action tokens (``batch.action_mask``), in order. With
    ``env.turn_reward=model`` these are the reward model's turn scores (plus any interaction turn
    reward); with ``final`` the last one also holds the whole episode's score.

    Raises:
        ValueError: a single-turn batch (no ``action_mask``).
    """
    if batch.action_mask is None or batch.rewards is None:
        raise ValueError("turn_rewards needs a multi-turn batch (action_mask and rewards set)")
    actions = batch.action_mask > 0
    following = torch.zeros_like(actions)
    following[:, :-1] = actions[:, 1:]
    ends = actions & ~following
    return [row[end].tolist() for row, end in zip(batch.rewards.float().cpu(), ends.cpu())]


def turn_metrics(per_turn: list[list[float]], prefix: str = "turn/") -> dict[str, float]:
    """``{prefix}reward_mean`` (mean over every policy turn of every episode) and
    ``{prefix}reward_<k>`` (mean over the episodes' k-th turns, k = 1, 2, ...) of
    :func:`turn_rewards`'s lists; ``{}`` when there are no turns."""
    flat = [r for turns in per_turn for r in turns]
    if not flat:
        return {}
    metrics = {f"{prefix}reward_mean": sum(flat) / len(flat)}
    for k in range(max(len(turns) for turns in per_turn)):
        kth = [turns[k] for turns in per_turn if len(turns) > k]
        metrics[f"{prefix}reward_{k + 1}"] = sum(kth) / len(kth)
    return metrics
