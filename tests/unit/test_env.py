"""The Gymnasium contract of TokenGenEnv and TokenGenVectorEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import textrl  # noqa: F401  (registers the env id)
from textrl.envs import ENV_ID, TokenGenEnv, TokenGenVectorEnv
from textrl.errors import TextRLError

from conftest import length_reward

PROMPTS = ["the dog ran", "a girl saw the cat in the park", "this movie was", "happy"]


def single(tokenizer, **kw):
    args = dict(
        tokenizer=tokenizer, prompts=PROMPTS, reward_model=length_reward, max_new_tokens=4, max_prompt_tokens=10
    )
    return TokenGenEnv(**{**args, **kw})


def vector(tokenizer, n=3, **kw):
    args = dict(
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=length_reward,
        num_envs=n,
        max_new_tokens=4,
        max_prompt_tokens=10,
    )
    return TokenGenVectorEnv(**{**args, **kw})


def test_check_env_passes(tokenizer):
    check_env(single(tokenizer), skip_render_check=True)


def test_make_and_make_vec_build_the_registered_envs(tokenizer):
    kw = dict(tokenizer=tokenizer, prompts=PROMPTS, reward_model=length_reward, max_new_tokens=3, max_prompt_tokens=8)
    env = gym.make(ENV_ID, **kw)
    assert isinstance(env.unwrapped, TokenGenEnv)
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **kw)
    assert isinstance(venv, TokenGenVectorEnv) and venv.num_envs == 2
    obs, _ = venv.reset(seed=0)
    assert obs["input_ids"].shape == (2, 11)


def test_observation_layout_and_spaces(tokenizer):
    env = single(tokenizer)
    obs, info = env.reset(options={"prompt": "the dog ran"})
    ids = tokenizer("the dog ran")["input_ids"]
    assert obs["input_ids"].dtype == np.int64 and obs["attention_mask"].dtype == np.int8
    assert obs["input_ids"][10 - len(ids) : 10].tolist() == ids
    assert obs["attention_mask"].tolist() == [0] * (10 - len(ids)) + [1] * len(ids) + [0] * 4
    assert env.observation_space.contains(obs) and info["prompt"] == "the dog ran"
    assert env.action_space.n == len(tokenizer)


def test_eos_terminates_and_reward_only_at_the_end(tokenizer):
    env = single(tokenizer)
    env.reset(seed=0, options={"prompt": "this movie was"})
    good, very = tokenizer.convert_tokens_to_ids(["good", "very"])
    for token in (very, good):
        _, reward, terminated, truncated, info = env.step(token)
        assert (reward, terminated, truncated, info) == (0.0, False, False, {})
    obs, reward, terminated, truncated, info = env.step(tokenizer.eos_token_id)
    assert terminated and not truncated
    assert info["response"] == "very good" and info["prompt"] == "this movie was"
    assert reward == info["score"] == 2.0  # the reward model's score of the decoded text
    assert obs["attention_mask"][10:].tolist() == [1, 1, 1, 0]
    with pytest.raises(TextRLError, match="reset"):
        env.step(good)


def test_max_new_tokens_truncates(tokenizer):
    env = single(tokenizer, max_new_tokens=3)
    env.reset(seed=1)
    dog = tokenizer.convert_tokens_to_ids("dog")
    flags = [env.step(dog)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_reward_uses_the_reward_models_score_of_decoded_text(tokenizer):
    seen = []

    def rm(prompts, responses):
        seen.append((list(prompts), list(responses)))
        return torch.tensor([42.5])

    env = single(tokenizer, reward_model=rm, max_new_tokens=2)
    env.reset(options={"prompt": "happy"})
    cat = tokenizer.convert_tokens_to_ids("cat")
    assert env.step(cat)[1] == 0.0
    assert env.step(cat)[1] == 42.5
    assert seen == [(["happy"], ["cat cat"])]


@pytest.mark.parametrize("action", [-1, 40, 10**6])
def test_action_outside_vocabulary_is_a_clear_error(tokenizer, action):
    env = single(tokenizer)
    env.reset(seed=0)
    with pytest.raises(TextRLError, match=rf"action {action} .*expected an integer in \[0, 40\)"):
        env.step(action)
    venv = vector(tokenizer, n=2)
    venv.reset(seed=0)
    with pytest.raises(TextRLError, match="outside the vocabulary"):
        venv.step(torch.tensor([5, action]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda p, r: torch.zeros(len(r) + 1), r"shape \(2,\); expected \(1,\)"),
        (lambda p, r: torch.tensor([float("nan")] * len(r)), "returned nan"),
        (lambda p, r: "great", "returned str"),
    ],
)
def test_bad_reward_model_output_is_a_clear_error(tokenizer, bad, message):
    env = single(tokenizer, reward_model=bad, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(TextRLError, match=message):
        env.step(5)


def test_long_prompt_is_cut_from_the_left_with_a_warning_or_rejected(tokenizer, caplog):
    long = "the dog ran and the cat ran and the boy ran and the girl ran"
    env = single(tokenizer, max_prompt_tokens=5)
    obs, _ = env.reset(options={"prompt": long})
    assert obs["input_ids"][:5].tolist() == tokenizer(long)["input_ids"][-5:]
    assert "cut from the left" in caplog.text
    strict = single(tokenizer, max_prompt_tokens=5, prompt_truncation="error")
    with pytest.raises(TextRLError, match="env.max_prompt_tokens=5"):
        strict.reset(options={"prompt": long})


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(prompts=[]), "holds no prompts"),
        (dict(prompts="/nonexistent/prompts.jsonl"), "does not exist"),
        (dict(max_new_tokens=0), "env.max_new_tokens: got 0"),
        (dict(max_prompt_tokens=-3), "env.max_prompt_tokens: got -3"),
    ],
)
def test_bad_constructor_arguments(tokenizer, kw, message):
    with pytest.raises(TextRLError, match=message):
        single(tokenizer, **kw)
    with pytest.raises(TextRLError, match=message):
        vector(tokenizer, **kw)


def test_vector_env_matches_single_envs_on_same_seeds_and_actions(tokenizer):
    n, steps = 3, 9
    rng = np.random.default_rng(0)
    vocab = len(tokenizer)
    actions = rng.integers(4, vocab, size=(steps, n))
    actions[1, 0] = actions[4, 2] = tokenizer.eos_token_id  # some episodes end early
    venv = vector(tokenizer, n=n)  # NEXT_STEP autoreset, the Gymnasium default
    envs = [single(tokenizer) for _ in range(n)]
    vobs, _ = venv.reset(seed=7)
    sobs = [env.reset(seed=7 + i)[0] for i, env in enumerate(envs)]
    needs_reset = [False] * n
    for t in range(steps):
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(torch.as_tensor(actions[t]))
        for i, env in enumerate(envs):
            if needs_reset[i]:  # NEXT_STEP: this step only resets the sub-env
                sobs[i], _ = env.reset()
                out = (0.0, False, False)
                needs_reset[i] = False
            else:
                sobs[i], r, term, trunc, info = env.step(int(actions[t, i]))
                out = (r, term, trunc)
                needs_reset[i] = term or trunc
                if term or trunc:
                    assert vinfo["_response"][i] and vinfo["response"][i] == info["response"]
            assert (float(vrew[i]), bool(vterm[i]), bool(vtrunc[i])) == out, (t, i)
            for key in ("input_ids", "attention_mask"):
                assert vobs[key][i].tolist() == sobs[i][key].tolist(), (t, i, key)


def test_vector_env_scores_all_episodes_ending_together_in_one_call(tokenizer):
    calls = []

    def rm(prompts, responses):
        calls.append(len(responses))
        return torch.ones(len(responses))

    venv = vector(tokenizer, n=4, reward_model=rm, max_new_tokens=2, autoreset_mode="disabled")
    venv.reset(seed=0)
    venv.step(torch.full((4,), 5))
    _, rewards, _, truncated, info = venv.step(torch.full((4,), 5))
    assert calls == [4] and truncated.all() and rewards.tolist() == [1.0] * 4
    assert list(info["response"]) == ["a a"] * 4  # token 5 is "a"


def test_disabled_autoreset_keeps_finished_episodes_until_reset(tokenizer):
    venv = vector(tokenizer, n=2, autoreset_mode="disabled")
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    venv.reset(seed=0)
    eos = tokenizer.eos_token_id
    obs, *_ = venv.step(torch.tensor([eos, 5]))
    frozen = obs["input_ids"][0].clone()
    obs, rewards, term, trunc, _ = venv.step(torch.tensor([6, 6]))
    assert obs["input_ids"][0].tolist() == frozen.tolist()  # finished slot ignores actions
    assert (rewards[0].item(), bool(term[0]), bool(trunc[0])) == (0.0, False, False)
    obs, _ = venv.reset(options={"reset_mask": torch.tensor([True, False]), "prompts": ["happy"]})
    assert venv.episode_prompts[0] == "happy" and not venv.done[0]
    assert obs["attention_mask"][0, 10:].sum() == 0 and obs["attention_mask"][1, 10:].sum() == 2


def test_vector_env_keeps_tensors_on_its_device(tokenizer):
    venv = vector(tokenizer, n=2, device="cpu")
    obs, _ = venv.reset(seed=0)
    obs, rewards, term, trunc, _ = venv.step(torch.tensor([5, 6]))
    assert all(isinstance(x, torch.Tensor) for x in (obs["input_ids"], rewards, term, trunc))
    assert rewards.dtype == torch.float32 and term.dtype == torch.bool
    assert venv.single_observation_space["input_ids"].shape == (14,)


def test_wrong_number_of_actions_or_prompts(tokenizer):
    venv = vector(tokenizer, n=3)
    with pytest.raises(TextRLError, match="got 2 prompts; expected 3"):
        venv.reset(options={"prompts": ["a", "b"]})
    venv.reset(seed=0)
    with pytest.raises(TextRLError, match="got 2 actions; expected 3"):
        venv.step(torch.tensor([5, 5]))


def test_format_prompt_changes_tokens_not_the_prompt_the_reward_sees(tokenizer):
    seen = []

    def rm(prompts, responses):
        seen.extend(prompts)
        return torch.zeros(len(prompts))

    wrap = lambda p: "the " + p  # noqa: E731
    env = single(tokenizer, reward_model=rm, max_new_tokens=1, format_prompt=wrap)
    obs, _ = env.reset(options={"prompt": "dog ran"})
    assert obs["input_ids"][10 - 4 : 10].tolist() == tokenizer("the dog ran")["input_ids"]
    env.step(5)
    venv = vector(tokenizer, n=1, reward_model=rm, max_new_tokens=1, format_prompt=wrap, autoreset_mode="disabled")
    vobs, _ = venv.reset(options={"prompts": ["dog ran"]})
    assert vobs["input_ids"][0].tolist() == obs["input_ids"].tolist()
    venv.step(torch.tensor([5]))
    assert seen == ["dog ran", "dog ran"]


def test_group_size_runs_each_drawn_prompt_in_k_consecutive_slots(tokenizer):
    draws = []
    for _ in range(2):
        venv = vector(tokenizer, n=6, autoreset_mode="disabled")
        _, info = venv.reset(seed=5, options={"group_size": 3})
        _, again = venv.reset(options={"group_size": 3})  # the next draw continues the seeded stream
        draws.append((list(info["prompt"]), list(again["prompt"])))
    first, second = draws[0]
    assert first[:3] == [first[0]] * 3 and first[3:] == [first[3]] * 3
    assert draws[0] == draws[1]  # same seed, same grouped prompts
    with pytest.raises(TextRLError, match="rollout.samples_per_prompt: got 4; expected a divisor of the 6 slots"):
        venv.reset(options={"group_size": 4})


def test_copy_false_returns_views_until_the_next_step(tokenizer):
    copied, viewed = vector(tokenizer, n=2), vector(tokenizer, n=2, copy=False)
    for venv in (copied, viewed):
        venv.reset(seed=0)
    a, *_ = copied.step(torch.tensor([5, 6]))
    b, *_ = viewed.step(torch.tensor([[5], [6]]))  # (N, 1) actions are accepted too
    assert torch.equal(a["input_ids"], b["input_ids"])
    before_a, before_b = a["input_ids"].clone(), b["input_ids"].clone()
    copied.step(torch.tensor([7, 7]))
    c, *_ = viewed.step(torch.tensor([7, 7]))
    assert torch.equal(a["input_ids"], before_a)  # a copy keeps its step's observation
    assert not torch.equal(b["input_ids"], before_b) and b["input_ids"].data_ptr() == c["input_ids"].data_ptr()
