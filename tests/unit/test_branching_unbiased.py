"""Branching estimates are unbiased, checked against exact values on a small env.

The policy is a bigram table over three actions (π(a | s) = softmax(θ[last token of s])[a]), so every
value and the exact policy gradient ∇J(θ) come from enumerating all episodes. The Monte Carlo
values of branched continuations converge to V(s); the expectation of VinePPO's policy-gradient
estimator, and of REINFORCE's turn-level estimator with same-state baselines in episodes whose length
the policy chooses (it ends the conversation itself: the case where per-turn normalisation is
biased, volcengine/verl#7244), equals the exact gradient within its sampling interval.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import DynamicCache

import textrl
from textrl.algorithms.advantages import rewards_before, segment_advantages, state_values
from textrl.config.schema import BranchConfig
from textrl.envs import TokenGenEnv, TokenGenVectorEnv
from textrl.policies.policy import PolicyOutput
from textrl.policies.sampling import SamplingConfig
from textrl.rollout.collector import RolloutCollector

ACTIONS = ("dog", "sad", "<eos>")


class Bigram(nn.Module):
    """π(a | s) = softmax(θ[last token of s])[a] over :data:`ACTIONS` (every other token −inf); V = 0.
    Keeps the engines' policy contract with an empty KV cache (a bigram needs no past)."""

    def __init__(self, tokenizer, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.vocab = len(tokenizer)
        self.allowed = torch.tensor(tokenizer.convert_tokens_to_ids(list(ACTIONS)))
        self.theta = nn.Parameter(torch.randn(self.vocab, len(ACTIONS)))
        self.lm = nn.Identity()

    @property
    def device(self):
        return self.theta.device

    def log_probs(self, previous: torch.Tensor) -> torch.Tensor:
        """``(..., 3)`` log π over the actions after each token of ``previous``."""
        return torch.log_softmax(self.theta[previous], -1)

    def forward(self, input_ids, attention_mask, position_ids=None, past_key_values=None, use_cache=False, **kw):
        logits = torch.full((*input_ids.shape, self.vocab), -1e9)
        logits[..., self.allowed] = self.theta[input_ids]
        keep = kw.get("logits_to_keep", 0)
        logits = logits[:, -keep:] if keep else logits
        values = torch.zeros(logits.shape[:2])
        return PolicyOutput(logits, values, (past_key_values or DynamicCache()) if use_cache else None)


def count_dog(prompts, responses):
    return torch.tensor([float(r.split().count("dog")) for r in responses])


class StopOrGo(textrl.Interaction):
    """After each policy turn: 1.0 for a turn that says "dog"; "sad" in a turn ends the conversation
    (the policy chooses its length), else the user says "the" and the policy answers again."""

    def respond(self, episode):
        words = self.tokenizer.decode(list(episode.last.ids), skip_special_tokens=True).split()
        reward = float("dog" in words)
        if "sad" in words:
            return textrl.Reply.end(reward=reward)
        return textrl.Reply.append(self.tokenizer("the", add_special_tokens=False)["input_ids"], reward=reward)


def zero_reward(prompts, responses):
    return torch.zeros(len(responses))


SETTINGS = {
    "single": dict(reward_model=count_dog, max_new_tokens=3),
    "turns": dict(reward_model=zero_reward, max_new_tokens=2, interaction=StopOrGo(), max_turns=3),
}


def episodes(tokenizer, policy, setting):
    """Every complete episode from the prompt ``happy``: ``(prev_ids, action_ids, return)`` where
    ``prev_ids[t]`` is the token each action followed (env tokens included)."""
    kw = dict(SETTINGS[setting])
    env = TokenGenEnv(tokenizer, ["happy"], kw.pop("reward_model"), max_prompt_tokens=4, **kw)
    ids = tokenizer.convert_tokens_to_ids(list(ACTIONS))
    done = []

    def walk(prefix):
        obs, _ = env.reset(options={"prompt": "happy"})
        total, finished = 0.0, False
        for a in prefix:
            obs, r, term, trunc, _ = env.step(a)
            total += r
            finished = term or trunc
        if finished:
            real = obs["input_ids"][obs["attention_mask"] > 0].tolist()
            acts = obs["action_mask"][obs["attention_mask"] > 0].tolist()
            prev = [real[i - 1] for i, a in enumerate(acts) if a]
            done.append((prev, [real[i] for i, a in enumerate(acts) if a], total))
            return
        for a in ids:
            walk(prefix + [a])

    walk([])
    return done, ids


def exact(policy, paths, ids):
    """``(∇J, V at the prompt = J, the return's std there)`` by enumeration."""
    index = {t: k for k, t in enumerate(ids)}
    policy.zero_grad()
    probs = torch.stack(
        [
            policy.log_probs(torch.tensor(prev))[range(len(acts)), [index[a] for a in acts]].sum().exp()
            for prev, acts, _ in paths
        ]
    )
    returns = torch.tensor([g for *_, g in paths])
    J = (probs * returns).sum()
    J.backward()
    p = probs.detach()
    variance = float((p * returns**2).sum() - J.detach() ** 2)
    return policy.theta.grad.clone(), float(J.detach()), math.sqrt(max(variance, 0.0))


def branched_batch(tokenizer, policy, setting, n, branch):
    kw = dict(SETTINGS[setting])
    reward_model = kw.pop("reward_model")
    env = TokenGenVectorEnv(
        tokenizer, ["happy"], reward_model, num_envs=n, max_prompt_tokens=4, autoreset_mode="disabled", **kw
    )
    collector = RolloutCollector(env, policy, None, SamplingConfig(), seed=11, branching=branch)
    with torch.no_grad():
        return collector.collect()


def per_episode_gradients(policy, batch, credit):
    """``(B, V, 3)``: Σ_t credit_t ∇θ log π(a_t | s_t) for each episode (the bigram's gradient in closed form)."""
    mask = batch.action_mask > 0
    ids = batch.response_ids
    prev = batch.input_ids[:, -batch.response_length - 1 : -1]  # the token each action followed
    index = {int(t): k for k, t in enumerate(policy.allowed)}
    grads = torch.zeros(batch.batch_size, policy.vocab, 3)
    with torch.no_grad():
        for i, t in mask.nonzero().tolist():
            p = policy.log_probs(prev[i, t]).exp()
            onehot = torch.zeros(3)
            onehot[index[int(ids[i, t])]] = 1.0
            grads[i, prev[i, t]] += credit[i, t] * (onehot - p)
    return grads


def largest_z(grads, expected) -> float:
    """The largest |mean − expected| / standard error over the gradient's entries that vary."""
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])
    used = se > 0
    assert (expected[~used].abs() < 1e-6).all()  # an entry no episode moves has no gradient
    return float(((mean[used] - expected[used]) / se[used]).abs().max())


def assert_unbiased(grads, expected, tolerance=4.5):
    assert largest_z(grads, expected) < tolerance


def test_monte_carlo_values_converge_to_the_exact_value(tokenizer):
    policy = Bigram(tokenizer)
    paths, ids = episodes(tokenizer, policy, "single")
    _, value, spread = exact(policy, paths, ids)
    k = 400
    batch = branched_batch(tokenizer, policy, "single", 4, BranchConfig(k=k, at="prompt"))
    first = batch.branches.mask.argmax(1)
    estimates = batch.branches.mean[torch.arange(4), first]
    assert spread > 0.1 and value > 0.1  # not vacuous
    z = (estimates - value) / (spread / math.sqrt(k))
    assert z.abs().max() < 4.5, (estimates, value)


def test_vineppo_policy_gradient_matches_the_exact_gradient(tokenizer):
    policy = Bigram(tokenizer, seed=1)
    paths, ids = episodes(tokenizer, policy, "single")
    gradient, _, _ = exact(policy, paths, ids)
    batch = branched_batch(tokenizer, policy, "single", 384, BranchConfig(k=4, at="tokens", every=1))
    credit = segment_advantages(batch.rewards, batch.branches.mean, batch.branches.mask, batch.action_mask)
    assert (batch.branches.mask == batch.action_mask).all()  # a value at every state
    assert_unbiased(per_episode_gradients(policy, batch, credit), gradient)


def test_turn_level_credit_with_same_state_baselines_is_unbiased_when_the_policy_chooses_when_to_stop(tokenizer):
    policy = Bigram(tokenizer, seed=2)
    paths, ids = episodes(tokenizer, policy, "turns")
    gradient, _, _ = exact(policy, paths, ids)
    assert len({len(a) for _, a, _ in paths}) > 2  # episodes of several lengths: the policy decides
    batch = branched_batch(tokenizer, policy, "turns", 384, BranchConfig(k=4, at="turns"))
    mask = batch.action_mask
    to_go = batch.rewards.sum(1, keepdim=True) - rewards_before(batch.rewards, mask)
    credit = (to_go - state_values(batch.branches.mean, batch.branches.mask, mask)) * mask
    assert (batch.branches.mask.sum(1) > 1).any()  # baselines at later turns too
    assert_unbiased(per_episode_gradients(policy, batch, credit), gradient)
    # the test has the power to see the bias of a credit that depends on how many turns the
    # episode took (what normalising per turn does when the policy chooses its length)
    per_turn = credit / batch.branches.mask.sum(1, keepdim=True)
    assert largest_z(per_episode_gradients(policy, batch, per_turn), gradient) > 6
