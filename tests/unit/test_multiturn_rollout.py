"""Multi-turn rollouts and training: the KV cache extended by ragged steps equals a teacher-forced
pass over the whole sequence, the ids trained on are the sampled ids plus the interaction's ids,
GAE skips env-token gaps, and PPO / REINFORCE update on multi-turn batches."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import textrl
from textrl.algorithms.advantages import gae
from textrl.envs import TokenGenVectorEnv
from textrl.policies.sampling import SamplingConfig, token_logprobs
from textrl.rollout.collector import RolloutCollector

from conftest import length_reward

PROMPTS = ["the dog ran", "a girl saw the cat in the park", "this movie was", "happy"]


class Chatty(textrl.Interaction):
    """Turns end at common words; replies of 1-3 words that depend on the prompt and turn (so
    slots get insertions of different lengths on the same step); a reward per turn; ends after 3."""

    stop_strings = ("dog", "cat", "ball")

    def respond(self, episode):
        k = episode.policy_turns
        if k >= 3:
            return textrl.Reply.end(reward=0.5)
        words = ["fun", "day", "park"][: (len(episode.prompt) + k) % 3 + 1]
        return textrl.Reply.append(
            self.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"], reward=0.25 * k
        )


def make_env(tokenizer, n=8, **kw):
    args = dict(
        num_envs=n,
        max_new_tokens=6,
        max_prompt_tokens=10,
        autoreset_mode=AutoresetMode.DISABLED,
        interaction=Chatty(),
        max_turns=4,
        max_episode_tokens=40,
    )
    return TokenGenVectorEnv(tokenizer, PROMPTS, length_reward, **{**args, **kw})


class Recorder:
    """Wraps ``env.step`` to record the actions and the env tokens of each step."""

    def __init__(self, env):
        self.actions, self.infos, self.active = [], [], []
        step = env.step

        def recorded(actions):
            self.active.append((~env.done).tolist())
            self.actions.append(actions.reshape(-1).tolist())
            out = step(actions)
            self.infos.append(out[4])
            return out

        env.step = recorded


def frozen(policy):
    ref = copy.deepcopy(policy.lm).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@pytest.fixture
def rollout(tokenizer, policy):
    env = make_env(tokenizer)
    rec = Recorder(env)
    collector = RolloutCollector(env, policy, frozen(policy), SamplingConfig(), seed=3)
    return collector.collect(prompts=PROMPTS + PROMPTS[::-1]), rec


def test_rollout_logprobs_and_values_equal_teacher_forced_recompute(rollout, policy):
    batch, rec = rollout
    with torch.no_grad():
        logits, values = policy.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
    mask = batch.action_mask
    recomputed = token_logprobs(logits[..., : batch.vocab_size], batch.response_ids, batch.sampling) * mask
    assert (recomputed - batch.logprobs).abs().max() <= 1e-4
    assert (values * mask - batch.values).abs().max() <= 1e-4
    assert ((batch.attention_mask[:, -batch.response_length :] > 0) & (mask == 0)).any()  # env tokens inside
    assert (batch.ref_logprobs - batch.untruncated_logprobs).abs().max() <= 1e-4  # π_ref = π: its own pass agrees
    # not vacuous: left-padded prompts, env tokens in the middle of rows, insertions of different
    # lengths on one step, and episodes ending after different numbers of turns
    assert (batch.attention_mask[:, 0] == 0).any() and batch.values.abs().max() > 0
    env_in_middle = (batch.attention_mask[:, -batch.response_length :] > 0) & (mask == 0)
    assert env_in_middle.any()
    lengths = [{len(e) for e in i["env_tokens"] if e is not None} for i in rec.infos if "env_tokens" in i]
    assert any(len(s) >= 2 for s in lengths)
    turns = np.concatenate([i["turns"][i["_turns"]] for i in rec.infos if "_turns" in i])
    assert len(set(turns.tolist())) >= 2


def test_ids_trained_on_are_the_sampled_ids_plus_the_interactions_ids(rollout):
    batch, rec = rollout
    T = batch.response_length
    for i in range(batch.batch_size):
        expected, actions = [], []
        for active, acts, info in zip(rec.active, rec.actions, rec.infos):
            if not active[i]:
                continue
            expected.append(acts[i]), actions.append(1)
            env_ids = info.get("env_tokens", [None] * batch.batch_size)[i]
            expected += list(env_ids or [])
            actions += [0] * len(env_ids or [])
        real = batch.attention_mask[i, -T:].bool()
        assert batch.input_ids[i, -T:][real].tolist() == expected
        assert batch.action_mask[i][real].tolist() == actions
        assert (batch.action_mask[i][~real] == 0).all()


def test_rewards_sit_on_each_turns_last_action_token_and_sum_to_the_score(rollout):
    batch, _ = rollout
    torch.testing.assert_close(batch.rewards.sum(1), batch.scores)
    assert ((batch.rewards != 0) <= (batch.action_mask > 0)).all()
    assert batch.reward_components["interaction"].abs().sum() > 0
    torch.testing.assert_close(batch.reward_components["model"] + batch.reward_components["interaction"], batch.scores)


def test_gae_skips_env_token_gaps():
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 9.0, 9.0, 0.25, 0.75, 1.5]])
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])  # actions at 0, 3, 4; env tokens at 1, 2
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    dense_adv, dense_ret = gae(
        torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.25, 0.75]]), torch.ones(1, 3), 0.9, 0.8
    )
    torch.testing.assert_close(adv[0, [0, 3, 4]], dense_adv[0])
    torch.testing.assert_close(ret[0, [0, 3, 4]], dense_ret[0])
    assert (adv[0, [1, 2, 5]] == 0).all() and (ret[0, [1, 2, 5]] == 0).all()


@pytest.mark.parametrize("algo", ["ppo", "ppo_ptx", "reinforce", "grpo"])
def test_algorithms_update_on_a_multiturn_batch(rollout, policy, tokenizer, algo, tmp_path):
    from textrl.algorithms import SetupContext
    from textrl.plugins import load_plugins

    factories = load_plugins().algorithms
    if algo not in factories:
        pytest.skip(f"the {algo} plugin is not installed")
    ptx_file = tmp_path / "ptx.txt"
    ptx_file.write_text("the dog ran in the park\na girl saw the cat\n")
    kwargs = {"grpo": {"group_size": 2}, "ppo_ptx": {"ptx_data": str(ptx_file), "ptx_batch_size": 2}}.get(algo, {})
    batch, _ = rollout
    algorithm = factories[algo](minibatch_size=4, micro_batch_size=2, lr=1e-3, **kwargs)
    algorithm.setup(policy, None, SetupContext(tokenizer=tokenizer))
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = algorithm.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["episode/length"] == pytest.approx(float(batch.action_mask.sum(1).mean()))
    assert any((p - b).abs().max() > 0 for p, b in zip(policy.parameters(), before))
    if algo.startswith("ppo"):
        prepared = algorithm.prepare(batch)
        assert (prepared["advantages"][batch.action_mask == 0] == 0).all()


def test_a_resumed_collector_collects_the_same_next_multiturn_batch(tokenizer, policy):
    first = RolloutCollector(make_env(tokenizer), policy, None, SamplingConfig(), seed=5)
    first.collect()
    state = first.state_dict()
    expected = first.collect()
    resumed = RolloutCollector(make_env(tokenizer), policy, None, SamplingConfig(), seed=123)
    resumed.load_state_dict(state)
    batch = resumed.collect()
    assert torch.equal(batch.input_ids, expected.input_ids) and torch.equal(batch.action_mask, expected.action_mask)
    assert torch.equal(batch.logprobs, expected.logprobs) and batch.prompts == expected.prompts


def test_tinystories_multiturn_rollout_is_exact(assets):
    from transformers import AutoTokenizer

    from textrl.policies import PolicyWithValueHead

    tok = AutoTokenizer.from_pretrained(assets / "tinystories-656k")
    torch.manual_seed(0)
    policy = PolicyWithValueHead.from_pretrained(str(assets / "tinystories-656k"), tokenizer=tok).eval()
    torch.nn.init.normal_(policy.value_head.summary.weight, std=0.5)

    class Story(textrl.Interaction):
        stop_strings = (".",)

        def respond(self, episode):
            if episode.policy_turns >= 3:
                return textrl.Reply.end()
            return textrl.Reply.append(self.message_ids("Then", role="user")[: 2 + episode.policy_turns])

    env = TokenGenVectorEnv(
        tok,
        ["Once upon a time", "Tom had a dog", "The sun"],
        length_reward,
        num_envs=3,
        max_new_tokens=12,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
        interaction=Story(),
        max_turns=3,
        max_episode_tokens=48,
    )
    batch = RolloutCollector(env, policy, None, SamplingConfig(), seed=0).collect()
    with torch.no_grad():
        logits, values = policy.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
    mask = batch.action_mask
    recomputed = token_logprobs(logits[..., : batch.vocab_size], batch.response_ids, batch.sampling) * mask
    assert (recomputed - batch.logprobs).abs().max() <= 1e-4
    assert (values * mask - batch.values).abs().max() <= 1e-4
    assert ((batch.attention_mask[:, -batch.response_length :] > 0) & (mask == 0)).any()  # env tokens inside


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_multiturn_rollout_on_cuda_is_exact_and_stays_on_the_device(tokenizer):
    from conftest import make_policy

    policy = make_policy(tokenizer).to("cuda")
    env = make_env(tokenizer, device="cuda")
    batch = RolloutCollector(env, policy, frozen(policy), SamplingConfig(), seed=3).collect(prompts=PROMPTS + PROMPTS)
    assert batch.input_ids.is_cuda and batch.action_mask.is_cuda and batch.logprobs.is_cuda
    with torch.no_grad():
        logits, values = policy.response_outputs(batch.input_ids, batch.attention_mask, batch.response_length)
    mask = batch.action_mask
    recomputed = token_logprobs(logits[..., : batch.vocab_size], batch.response_ids, batch.sampling) * mask
    assert (recomputed - batch.logprobs).abs().max() <= 1e-4
    assert (values * mask - batch.values).abs().max() <= 1e-4
    assert ((batch.attention_mask[:, -batch.response_length :] > 0) & (mask == 0)).any()
