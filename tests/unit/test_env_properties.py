"""Property tests (hypothesis) of the token-generation MDP, on random prompts and action sequences.

For prompts drawn from the conftest word vocabulary, random token actions (EOS included often),
random ``max_new_tokens`` (1..8), ``max_prompt_tokens`` and ``stop_on_eos`` on/off:

- :class:`TokenGenEnv`: every observation lies in ``observation_space`` and has the documented
  layout (prompt right-aligned before column P, the response's tokens from column P on); the
  reward is 0 on every step but the last, and the last step's reward is the reward model's score
  of (raw prompt, decoded response), with one reward call per episode; ``terminated`` and
  ``truncated`` are never both true, ``terminated`` iff the action was EOS (with
  ``stop_on_eos``), ``truncated`` iff ``max_new_tokens`` tokens came without EOS, so the episode
  length is the position of the first EOS or ``max_new_tokens``; stepping after the end raises;
  several episodes on one env do not leak state into each other.
- :class:`TokenGenVectorEnv` with N = 1..4 slots, in both ``NEXT_STEP`` and ``DISABLED``
  autoreset modes, given the same seeds/prompts and per-slot actions, returns the same
  observations, rewards, flags, responses and scores as N single envs stepped side by side, and
  scores all episodes that end on one step in one batched reward call.

The expected responses are computed here from the word list, not with the env's decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textrl.envs import TokenGenEnv, TokenGenVectorEnv
from textrl.errors import TextRLError

from conftest import WORDS, make_tokenizer

TOK = make_tokenizer()  # built once: hypothesis runs each test dozens of times
VOCAB = len(TOK)
EOS = TOK.eos_token_id
FIRST_WORD = TOK.convert_tokens_to_ids(WORDS[0])  # specials come first, then WORDS in order
assert [TOK.convert_tokens_to_ids(w) for w in WORDS] == list(range(FIRST_WORD, FIRST_WORD + len(WORDS)))

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected_response(actions) -> str:
    """The response text the reward model should see: the words of the non-special tokens."""
    return " ".join(WORDS[a - FIRST_WORD] for a in actions if a >= FIRST_WORD)


def expected_length(actions, max_new_tokens: int, stop_on_eos: bool) -> int:
    """Tokens in the episode: up to and including the first EOS (with stop_on_eos), else T."""
    head = list(actions[:max_new_tokens])
    if stop_on_eos and EOS in head:
        return head.index(EOS) + 1
    return max_new_tokens


class RecordingReward:
    """A deterministic reward of (prompt, response) that records every call.

    Depends on the response's words and their order and on the prompt's length; its values are
    multiples of 1/8 small enough to be exact in float32, so single and vector envs compare with ==.
    """

    def __init__(self):
        self.calls: list[tuple[list[str], list[str]]] = []

    @staticmethod
    def score(prompt: str, response: str) -> float:
        words = response.split()
        return sum((k + 1) * (WORDS.index(w) + 1) for k, w in enumerate(words)) / 4 + len(prompt.split()) / 8

    def __call__(self, prompts, responses):
        self.calls.append((list(prompts), list(responses)))
        return torch.tensor([self.score(p, r) for p, r in zip(prompts, responses)])


prompts_st = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
# a token id anywhere in the action space, or EOS (often, so episodes end early)
action_st = st.one_of(st.integers(0, VOCAB - 1), st.just(EOS))


@st.composite
def episodes_st(draw, max_new_tokens: int):
    prompt = draw(prompts_st)
    actions = draw(st.lists(action_st, min_size=max_new_tokens, max_size=max_new_tokens))
    return prompt, actions


def prompt_ids(prompt: str, max_prompt_tokens: int) -> list[int]:
    return TOK(prompt)["input_ids"][-max_prompt_tokens:]  # the env cuts long prompts from the left


@SETTINGS
@given(
    data=st.data(),
    max_new_tokens=st.integers(1, 8),
    max_prompt_tokens=st.integers(2, 10),
    stop_on_eos=st.booleans(),
    num_episodes=st.integers(1, 3),
)
def test_single_env_episode_invariants(data, max_new_tokens, max_prompt_tokens, stop_on_eos, num_episodes):
    T, P = max_new_tokens, max_prompt_tokens
    reward_model = RecordingReward()
    env = TokenGenEnv(TOK, ["happy"], reward_model, max_new_tokens=T, max_prompt_tokens=P, stop_on_eos=stop_on_eos)
    space = env.observation_space
    for _ in range(num_episodes):  # one env, several episodes: reset must clear the last one
        prompt, actions = data.draw(episodes_st(T))
        length = expected_length(actions, T, stop_on_eos)
        obs, info = env.reset(options={"prompt": prompt})
        ids = prompt_ids(prompt, P)
        assert space.contains(obs) and info["prompt"] == prompt
        assert obs["input_ids"][P - len(ids) : P].tolist() == ids
        assert obs["attention_mask"].tolist() == [0] * (P - len(ids)) + [1] * len(ids) + [0] * T
        calls_before = len(reward_model.calls)
        for t, action in enumerate(actions[:length]):
            obs, reward, terminated, truncated, info = env.step(action)
            assert space.contains(obs), (t, obs)
            assert obs["input_ids"][P - len(ids) : P].tolist() == ids  # the prompt is never touched
            assert obs["input_ids"][P : P + t + 1].tolist() == actions[: t + 1]
            assert obs["attention_mask"][P:].tolist() == [1] * (t + 1) + [0] * (T - t - 1)
            assert not (terminated and truncated)
            last = t == length - 1
            assert terminated == (last and stop_on_eos and action == EOS), (t, actions)
            assert truncated == (last and not terminated), (t, actions)
            if not last:
                assert reward == 0.0 and "response" not in info and "score" not in info
                assert len(reward_model.calls) == calls_before  # scored only at the end
        response = expected_response(actions[:length])
        assert reward_model.calls[calls_before:] == [([prompt], [response])]  # one call per episode
        assert reward == info["score"] == RecordingReward.score(prompt, response)
        assert info["response"] == response and info["prompt"] == prompt
        with pytest.raises(TextRLError, match="reset"):
            env.step(actions[0])


def single_outcome(env, action):
    obs, reward, terminated, truncated, info = env.step(int(action))
    return obs, (float(reward), bool(terminated), bool(truncated)), info


@SETTINGS
@given(
    data=st.data(),
    n=st.integers(1, 4),
    max_new_tokens=st.integers(1, 8),
    max_prompt_tokens=st.integers(2, 10),
    stop_on_eos=st.booleans(),
    mode=st.sampled_from([AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED]),
    pool=st.lists(prompts_st, min_size=1, max_size=5),
    explicit=st.booleans(),
    seed=st.integers(0, 2**16),
    steps=st.integers(1, 20),
)
def test_vector_env_matches_single_envs(
    data, n, max_new_tokens, max_prompt_tokens, stop_on_eos, mode, pool, explicit, seed, steps
):
    T, P = max_new_tokens, max_prompt_tokens
    kw = dict(max_new_tokens=T, max_prompt_tokens=P, stop_on_eos=stop_on_eos)
    vreward = RecordingReward()
    venv = TokenGenVectorEnv(TOK, pool, vreward, num_envs=n, autoreset_mode=mode, **kw)
    envs = [TokenGenEnv(TOK, pool, RecordingReward(), **kw) for _ in range(n)]
    actions = data.draw(st.lists(st.lists(action_st, min_size=n, max_size=n), min_size=steps, max_size=steps))
    # DISABLED mode: on some steps first reset some of the finished slots with reset_mask
    resets = data.draw(st.lists(st.booleans(), min_size=steps, max_size=steps))

    # start: the same explicit prompts, or slot i draws what a single env seeded seed+i draws
    initial = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)) if explicit else None
    vobs, vinfo = venv.reset(seed=seed, options={"prompts": initial} if explicit else None)
    starts = [
        env.reset(seed=seed + i, options={"prompt": initial[i]} if explicit else None) for i, env in enumerate(envs)
    ]
    sobs = [obs for obs, _ in starts]
    sprompts = [info["prompt"] for _, info in starts]  # each single env's current prompt

    def compare_obs(vobs, where):
        for i in range(n):
            single = {k: vobs[k][i].cpu().numpy() for k in ("input_ids", "attention_mask", "action_mask")}
            assert venv.single_observation_space.contains(single), (where, i)
            for key in ("input_ids", "attention_mask", "action_mask"):
                assert vobs[key][i].tolist() == sobs[i][key].tolist(), (where, i, key)

    if explicit:
        assert sprompts == initial
    assert list(vinfo["prompt"]) == sprompts == venv.episode_prompts
    compare_obs(vobs, "reset")
    finished = [False] * n  # single env i's episode has ended (and is not yet reset)
    for t in range(steps):
        if mode == AutoresetMode.DISABLED and resets[t] and any(finished):
            # new prompts: drawn by each slot's RNG, given per slot being reset, or given for all N
            how = data.draw(st.sampled_from(["draw", "per_reset_slot", "all_slots"]))
            given_prompts = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
            chosen = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))  # often a strict subset
            mask = [f and c for f, c in zip(finished, chosen)]
            slots = [i for i in range(n) if mask[i]]
            options = {"reset_mask": torch.tensor(mask)}
            if how == "per_reset_slot":
                options["prompts"] = [given_prompts[i] for i in slots]
            elif how == "all_slots":
                options["prompts"] = given_prompts
            vobs, _ = venv.reset(options=options)
            for i, env in enumerate(envs):
                if mask[i]:
                    sobs[i], info = env.reset(options=None if how == "draw" else {"prompt": given_prompts[i]})
                    sprompts[i] = info["prompt"]
                    assert venv.episode_prompts[i] == info["prompt"]
                    finished[i] = False
            compare_obs(vobs, ("reset_mask", t))
        calls_before = len(vreward.calls)
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(torch.tensor(actions[t]))
        ended = []
        for i, env in enumerate(envs):
            if finished[i]:
                if mode == AutoresetMode.NEXT_STEP:  # this step only resets the slot, ignoring its action
                    sobs[i], info = env.reset()
                    sprompts[i] = info["prompt"]
                    finished[i] = False
                out = (0.0, False, False)  # DISABLED: the finished slot keeps its final obs
            else:
                sobs[i], out, info = single_outcome(env, actions[t][i])
                if out[1] or out[2]:
                    finished[i] = True
                    ended.append(i)
                    assert vinfo["_response"][i] and vinfo["response"][i] == info["response"], (t, i)
                    assert vinfo["prompt"][i] == info["prompt"] and float(vinfo["score"][i]) == info["score"]
                    if mode == AutoresetMode.DISABLED:
                        assert venv.episode_responses[i] == info["response"]
            assert (float(vrew[i]), bool(vterm[i]), bool(vtrunc[i])) == out, (t, i, actions[t])
        if ended:
            assert np.flatnonzero(vinfo["_response"]).tolist() == ended
            # every episode ending on this step is scored in one batched call, in slot order
            assert vreward.calls[calls_before:] == [
                ([sprompts[i] for i in ended], [vinfo["response"][i] for i in ended])
            ]
        else:
            assert "_response" not in vinfo and len(vreward.calls) == calls_before
        compare_obs(vobs, t)
        assert venv.episode_prompts == sprompts, t
