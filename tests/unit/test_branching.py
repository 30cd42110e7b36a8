"""Branching an episode from an exact state (textrl.rollout.branching): a branched continuation is
token for token the rollout of a fresh episode with the same prefix and the same random stream, for
both engines, with env tokens and turn bookkeeping in the prefix; the main rollout is the one a
collector without branches collects; the estimates sit on the actions of the chosen states."""

from __future__ import annotations

import pytest
import torch

import textrl
from textrl.config.schema import BranchConfig
from textrl.envs import TokenGenVectorEnv
from textrl.policies import SamplingConfig, frozen_reference
from textrl.rollout.collector import RolloutCollector
from textrl.rollout.engines import make_engine
from textrl.rollout.loop import Episodes, play, ragged_block

from conftest import length_reward

PROMPTS = ["happy", "the dog ran", "a girl saw the cat in the park", "this movie"]
P = 10


class Replies(textrl.Interaction):
    """Turns end at common words; replies of 1-4 words by prompt and turn; ends after 3 turns."""

    stop_strings = ("dog", "cat", "ball", "park")

    def respond(self, episode):
        k = episode.policy_turns
        if k >= 3:
            return textrl.Reply.end(reward=0.5)
        words = ["fun", "day", "the", "ball"][: (len(episode.prompt) + k) % 4 + 1]
        return textrl.Reply.append(self.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"], reward=k)


def make_env(tokenizer, prompts):
    return TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=len(prompts),
        max_new_tokens=6,
        max_prompt_tokens=P,
        autoreset_mode="disabled",
        interaction=Replies(),
        max_turns=4,
        max_episode_tokens=40,
    )


def engine_for(name, policy, env, seed):
    vocab, cache = int(env.single_action_space.n), env.width + (env.width - P)
    generator = torch.Generator().manual_seed(seed)
    return make_engine(name, policy, SamplingConfig(), vocab, generator, env.num_envs, cache, "aot_eager")


def play_prefix(env, engine, prompts, steps, actions=None):
    """Reset ``env`` on ``prompts`` and take ``steps`` steps: the engine's own draws, or ``actions``
    (one ``(N, 1)`` tensor per step) forced. Returns the pending draw and the actions taken."""
    obs, _ = env.reset(options={"prompts": prompts})
    draw = engine.start(obs["input_ids"][:, :P], obs["attention_mask"][:, :P])
    active, taken = torch.ones(env.num_envs, 1, dtype=torch.bool), []
    for t in range(steps):
        tokens = draw.tokens if actions is None else actions[t]
        taken.append(tokens)
        _, _, terminated, truncated, info = env.step(tokens)
        if "_score" in info:
            active = active & ~(terminated | truncated)[:, None]
        if "env_tokens" in info:
            draw = engine.extend(*ragged_block(tokens, active, info["env_tokens"]))
        else:
            draw = engine.advance(tokens, active)
    return draw, taken


def play_out(env, engine):
    """Play ``env`` from its pending state to the end with a fresh draw from the engine's stream."""
    episodes = Episodes(list(env.episode_prompts), running=int((~env.done).sum()))
    obs, _, rewards = play(env, engine, engine.redraw(), episodes)
    return obs, sum(rewards.values(), torch.zeros(env.num_envs))


@pytest.mark.parametrize("engine_name", ["eager", "compiled"])
def test_a_branch_continues_as_a_fresh_episode_with_the_same_prefix_and_stream(tokenizer, policy, engine_name):
    steps, rows = 5, [0, 0, 1, 1, 2, 2, 3, 3]
    env = make_env(tokenizer, PROMPTS)
    engine = engine_for(engine_name, policy, env, seed=0)
    _, taken = play_prefix(env, engine, PROMPTS, steps)
    assert env.action_counts.tolist() != (env.lengths).tolist()  # not vacuous: env tokens in some prefixes
    branch_env = env.branch(rows)
    branch = play_out(branch_env, engine.branch(torch.tensor(rows), torch.Generator().manual_seed(7)))

    prompts = [PROMPTS[i] for i in rows]
    fresh_env = make_env(tokenizer, prompts)
    fresh_engine = engine_for(engine_name, policy, fresh_env, seed=123)  # another stream for the prefix
    play_prefix(fresh_env, fresh_engine, prompts, steps, actions=[a[rows] for a in taken])
    fresh_engine.generator = torch.Generator().manual_seed(7)  # the branch's stream from the branch point on
    fresh = play_out(fresh_env, fresh_engine)

    for key in ("input_ids", "attention_mask", "action_mask"):
        assert torch.equal(branch[0][key], fresh[0][key]), key
    torch.testing.assert_close(branch[1], fresh[1], rtol=0, atol=1e-6)  # the returns from the branch point on
    copies = branch[0]["input_ids"].view(4, 2, -1)
    assert (copies[:, 0] != copies[:, 1]).any()  # two copies of one state went different ways
    assert branch_env.action_counts.sum() > env.action_counts[rows].sum()  # they sampled tokens


@pytest.mark.parametrize("engine_name", ["eager", "compiled"])
def test_branching_leaves_the_source_env_and_engine_as_they_were(tokenizer, policy, engine_name):
    results = []
    for branch_first in (False, True):
        env = make_env(tokenizer, PROMPTS)
        engine = engine_for(engine_name, policy, env, seed=0)
        draw, _ = play_prefix(env, engine, PROMPTS, 3)
        if branch_first:
            play_out(env.branch([0, 1, 2, 3, 3]), engine.branch(torch.tensor([0, 1, 2, 3, 3]), torch.Generator()))
        obs, _, rewards = play(env, engine, draw, Episodes(list(env.episode_prompts), running=int((~env.done).sum())))
        results.append((obs, sum(rewards.values(), torch.zeros(4))))
    for key in ("input_ids", "attention_mask", "action_mask"):
        assert torch.equal(results[0][0][key], results[1][0][key]), key
    assert torch.equal(results[0][1], results[1][1])


def branching_collector(tokenizer, policy, branch):
    env = make_env(tokenizer, PROMPTS + PROMPTS)
    return RolloutCollector(env, policy, frozen_reference(policy), SamplingConfig(), seed=3, branching=branch)


@pytest.mark.parametrize("at", ["prompt", "turns", "tokens"])
def test_the_main_rollout_is_the_one_a_collector_without_branches_collects(tokenizer, policy, at):
    plain = branching_collector(tokenizer, policy, None).collect()
    branched = branching_collector(tokenizer, policy, BranchConfig(k=3, at=at, every=3)).collect()
    for name in ("input_ids", "attention_mask", "action_mask", "logprobs", "values", "rewards", "ref_logprobs"):
        assert torch.equal(getattr(plain, name), getattr(branched, name)), name
    estimates = branched.branches
    assert plain.branches is None and estimates.sampled_tokens > 0
    assert ((estimates.mask > 0) <= (branched.action_mask > 0)).all()  # estimates sit on actions
    first = (branched.action_mask > 0).float().argmax(1)
    assert (estimates.mask[torch.arange(len(first)), first] == 1).all()  # every episode's first state
    if at != "prompt":
        assert (estimates.mask.sum(1) > 1).any()  # later states too
    assert (estimates.std >= 0).all() and torch.isfinite(estimates.mean).all()


@pytest.mark.parametrize(
    "algo, params",
    [
        ("vineppo", {"branch": {"k": 2, "at": "turns"}}),
        ("reinforce", {"baseline": "same_state", "branch": {"k": 2, "at": "turns"}}),
        ("grpo", {"group_by": "state", "branch": {"k": 3, "at": "prompt"}}),
    ],
)
def test_algorithms_that_branch_update_on_their_estimates(tokenizer, policy, algo, params):
    from textrl.algorithms import SetupContext
    from textrl.plugins import load_plugins

    factories = load_plugins().algorithms
    if algo not in factories:
        pytest.skip(f"the {algo} plugin is not installed")
    algorithm = factories[algo](minibatch_size=4, lr=1e-3, **params)
    algorithm.setup(policy, None, SetupContext(tokenizer=tokenizer))
    batch = branching_collector(tokenizer, policy, algorithm.branching).collect()
    prepared = algorithm.prepare(batch)
    per_token = [v for v in prepared.values() if v.shape == batch.action_mask.shape]
    assert per_token and all((v * (batch.action_mask == 0)).abs().max() == 0 for v in per_token)  # on actions only
    before = [p.detach().clone() for p in policy.lm.parameters()]
    metrics = algorithm.update(batch)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert any((p - b).abs().max() > 0 for p, b in zip(policy.lm.parameters(), before))
    with pytest.raises(textrl.TextRLError, match="without branches"):
        algorithm.prepare(branching_collector(tokenizer, policy, None).collect())
