"""Multi-turn episodes in the token envs: env tokens in the state with ``action_mask`` 0, turn
ends (EOS, stop strings inside a token), budgets, per-turn rewards, faults, Gymnasium API."""

from __future__ import annotations

import signal

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import textrl
from textrl.envs import ENV_ID, TokenGenEnv, TokenGenVectorEnv
from textrl.errors import TextRLError

from conftest import length_reward

PROMPTS = ["the dog ran", "a girl saw the cat", "this movie was", "happy"]


class Scripted(textrl.Interaction):
    """After policy turn k, append ``replies[k-1]`` (words) with reward k; end after the last."""

    def __init__(self, replies=("the park", "a ball played"), stop_strings=()):
        self.replies, self.stop_strings = replies, stop_strings

    def respond(self, episode):
        k = episode.policy_turns
        if k > len(self.replies):
            return textrl.Reply.end(reward=10.0)
        return textrl.Reply.append(
            self.tokenizer(self.replies[k - 1], add_special_tokens=False)["input_ids"], reward=float(k)
        )


def single(tokenizer, interaction=None, **kw):
    args = dict(
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=length_reward,
        max_new_tokens=4,
        max_prompt_tokens=8,
        interaction=interaction if interaction is not None else Scripted(),
        max_turns=4,
        max_episode_tokens=24,
    )
    return TokenGenEnv(**{**args, **kw})


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_env_tokens_enter_the_state_unmarked_and_rewards_arrive_per_turn(tokenizer):
    env = single(tokenizer)
    eos, dog, cat = tokenizer.eos_token_id, *ids(tokenizer, "dog cat")
    obs, _ = env.reset(options={"prompt": "happy"})
    assert set(obs) == {"input_ids", "attention_mask", "action_mask"} and obs["input_ids"].shape == (32,)
    obs, r, term, trunc, info = env.step(dog)
    assert (r, term, trunc, info) == (0.0, False, False, {})
    obs, r, term, trunc, info = env.step(eos)  # turn 1 ends: "the park" appended, reward 1
    assert (r, term, trunc) == (1.0, False, False) and info["env_tokens"] == ids(tokenizer, "the park")
    P = 8
    assert obs["input_ids"][P : P + 4].tolist() == [dog, eos, *ids(tokenizer, "the park")]
    assert obs["action_mask"][P : P + 5].tolist() == [1, 1, 0, 0, 0] and obs["action_mask"][:P].sum() == 0
    assert obs["attention_mask"][P : P + 5].tolist() == [1, 1, 1, 1, 0]
    env.step(cat)
    obs, r, *_ = env.step(eos)  # turn 2: "a ball played", reward 2
    assert r == 2.0 and obs["action_mask"][P + 4 : P + 9].tolist() == [1, 1, 0, 0, 0]
    obs, r, term, trunc, info = env.step(eos)  # turn 3 ends the episode: reward 10 + the RM's score
    response = tokenizer.decode(obs["input_ids"][P : P + 10].tolist(), skip_special_tokens=True)
    assert term and not trunc and info["response"] == response
    assert info["reward/model"] == len(response.split()) and info["reward/interaction"] == 13.0
    assert r == 10.0 + info["reward/model"] and info["score"] == 13.0 + info["reward/model"] and info["turns"] == 3


def test_check_env_passes_with_an_interaction(tokenizer):
    check_env(single(tokenizer), skip_render_check=True)


def test_make_and_make_vec_take_an_interaction(tokenizer):
    kw = dict(
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=length_reward,
        max_new_tokens=3,
        max_prompt_tokens=8,
        interaction=Scripted(),
        max_turns=2,
        max_episode_tokens=12,
    )
    env = gym.make(ENV_ID, **kw)
    assert isinstance(env.unwrapped, TokenGenEnv) and "action_mask" in env.observation_space.spaces
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **kw)
    obs, _ = venv.reset(seed=0)
    assert isinstance(venv, TokenGenVectorEnv) and obs["action_mask"].shape == (2, 20)


def test_a_stop_string_ending_inside_a_token_ends_the_turn_at_that_token(tokenizer):
    env = single(tokenizer, Scripted(stop_strings=("do",)))
    env.reset(options={"prompt": "happy"})
    the, dog = ids(tokenizer, "the dog")
    assert env.step(the)[1:4] == (0.0, False, False)
    _, r, term, trunc, info = env.step(dog)  # "the dog" contains "do", which ends inside "dog"
    assert r == 1.0 and info["env_tokens"] == ids(tokenizer, "the park")


@pytest.mark.parametrize(
    "kw, actions, turns_done",
    [
        ({"max_new_tokens": 2}, ["dog", "cat"], 1),  # a policy turn at its limit without an end
        ({"max_turns": 1}, ["dog", "<eos>"], 1),  # the interaction continues after the last allowed turn
        ({"max_episode_tokens": 4}, ["dog", "<eos>"], 1),  # 2 + 2 env tokens leave no room for a policy token
    ],
)
def test_budgets_truncate_and_the_episode_is_still_scored(tokenizer, kw, actions, turns_done):
    env = single(tokenizer, **kw)
    env.reset(options={"prompt": "happy"})
    for a in actions[:-1]:
        assert env.step(tokenizer.convert_tokens_to_ids(a))[2:4] == (False, False)
    obs, r, term, trunc, info = env.step(tokenizer.convert_tokens_to_ids(actions[-1]))
    assert trunc and not term and info["turns"] == turns_done and "env_tokens" not in info
    assert info["score"] == info["reward/model"] + info["reward/interaction"] and r == info["score"]
    assert obs["attention_mask"][8:].sum() == len(actions)  # nothing appended past the budget


class Faulty(textrl.Interaction):
    def __init__(self, mode):
        self.mode = mode

    def respond(self, episode):
        if episode.policy_turns > 1:
            return textrl.Reply.end()
        if self.mode == "raise":
            raise RuntimeError("tool down")
        if self.mode == "string":
            return "not a reply"
        if self.mode == "vocab":
            return textrl.Reply.append([10**6])
        if self.mode == "empty":
            return textrl.Reply.append([])
        return textrl.Reply.append([1], reward=float("nan"))


@pytest.mark.parametrize(
    "mode, why",
    [
        ("raise", "RuntimeError: tool down"),
        ("string", "respond() returned str; expected a textrl.Reply"),
        ("vocab", "ids outside the vocabulary [0, 40)"),
        ("nan", "reward nan is not a finite number"),
        ("empty", "empty Reply.append; expected at least one id"),
    ],
)
def test_a_faulty_interaction_gives_the_policy_an_error_message(tokenizer, mode, why, caplog):
    env = single(tokenizer, Faulty(mode))
    env.reset(options={"prompt": "happy"})
    _, r, term, trunc, info = env.step(tokenizer.eos_token_id)
    assert (r, term, trunc) == (0.0, False, False)
    assert info["env_tokens"] == textrl.message_ids(tokenizer, f"error: {why}", role="tool")
    assert why in caplog.text
    assert env.step(tokenizer.eos_token_id)[2]  # the next turn end ends the episode normally


class Endless(textrl.Interaction):
    def respond(self, episode):
        return textrl.Reply.append(self.tokenizer("the", add_special_tokens=False)["input_ids"])


def test_an_interaction_that_never_ends_is_truncated_at_max_turns(tokenizer):
    env = single(tokenizer, Endless(), max_turns=3, max_episode_tokens=100)
    env.reset(seed=0)
    steps = 0
    while True:
        steps += 1
        *_, term, trunc, info = env.step(tokenizer.eos_token_id)
        if term or trunc:
            break
    assert trunc and steps == 3 and info["turns"] == 3


def test_bad_budgets_and_interactions_are_one_error_line(tokenizer):
    with pytest.raises(TextRLError, match=r"^env.max_turns: got 0; expected a positive integer$"):
        single(tokenizer, max_turns=0)
    with pytest.raises(TextRLError, match=r"^interaction: got str; expected a textrl.Interaction$"):
        single(tokenizer, "calculator")


def run_single(tokenizer, prompt, actions):
    env = single(tokenizer)
    obs, _ = env.reset(options={"prompt": prompt})
    rewards = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        if term or trunc:
            return obs, rewards, info
    return obs, rewards, None


def test_vector_env_steps_each_slot_as_the_single_env(tokenizer):
    eos = tokenizer.eos_token_id
    w = {t: tokenizer.convert_tokens_to_ids(t) for t in ("dog", "cat", "the", "sad")}
    # slots end turns on different steps, so insertions of different lengths land on the same step
    scripts = [
        [w["dog"], eos, eos, w["cat"], eos],
        [eos, w["dog"], w["the"], eos, eos],
        [w["sad"], w["sad"], w["sad"], w["sad"], w["sad"]],
        [eos, eos, eos, eos, eos],
    ]
    venv = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=4,
        max_new_tokens=4,
        max_prompt_tokens=8,
        autoreset_mode=AutoresetMode.DISABLED,
        interaction=Scripted(),
        max_turns=4,
        max_episode_tokens=24,
    )
    obs, _ = venv.reset(options={"prompts": PROMPTS})
    rewards, infos = [], []
    for t in range(5):
        obs, r, term, trunc, info = venv.step(torch.tensor([s[t] for s in scripts]))
        rewards.append(r)
        infos.append(info)
    assert any("env_tokens" in i and i["_env_tokens"].sum() >= 2 for i in infos)
    for i, (prompt, script) in enumerate(zip(PROMPTS, scripts)):
        s_obs, s_rewards, s_info = run_single(tokenizer, prompt, script)
        for key in ("input_ids", "attention_mask", "action_mask"):
            assert obs[key][i].tolist() == s_obs[key].tolist(), (i, key)
        assert [float(r[i]) for r in rewards][: len(s_rewards)] == pytest.approx(s_rewards)
        end = next(k for k, info in enumerate(infos) if "_score" in info and info["_score"][i])
        for key in ("score", "reward/model", "reward/interaction", "turns"):
            assert infos[end][key][i] == pytest.approx(s_info[key])
        assert infos[end]["response"][i] == s_info["response"]
    assert venv.done.all()


def test_vector_env_autoresets_next_step_with_an_interaction(tokenizer):
    venv = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        length_reward,
        num_envs=2,
        max_new_tokens=4,
        max_prompt_tokens=8,
        interaction=Endless(),
        max_turns=1,
        max_episode_tokens=8,
    )
    obs, _ = venv.reset(seed=0)
    eos = tokenizer.eos_token_id
    _, _, _, trunc, info = venv.step(torch.tensor([eos, 5]))
    assert trunc.tolist() == [True, False] and info["_score"].tolist() == [True, False]
    obs, r, term, trunc, _ = venv.step(torch.tensor([5, 5]))  # slot 0 restarts: action ignored
    assert obs["attention_mask"][0, 8:].sum() == 0 and obs["action_mask"][0].sum() == 0 and r[0] == 0
    assert obs["action_mask"][1, 8:10].tolist() == [1, 1]


class Exiting(textrl.Interaction):
    def __init__(self, error):
        self.error = error

    def respond(self, episode):
        raise self.error


def test_a_tool_that_exits_stops_the_run_with_one_error_line_naming_it(tokenizer):
    env = single(tokenizer, Exiting(SystemExit(3)))
    env.reset(options={"prompt": "happy"})
    with pytest.raises(TextRLError, match=r"^interaction Exiting: respond\(\) raised SystemExit\(3\); expected"):
        env.step(tokenizer.eos_token_id)


def test_a_tools_keyboard_interrupt_stops_the_run_as_ctrl_c_does(tokenizer, capsys):
    from textrl.signals import StopSignals

    # Python's own SIGINT handler, as in a user's process: a pytest-xdist worker can inherit another
    # one from an earlier test (SIGINT ignored, so the os.kill below raised nothing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        env = single(tokenizer, Exiting(KeyboardInterrupt()))
        env.reset(options={"prompt": "happy"})
        with StopSignals() as stop:  # what a training stage runs in: Ctrl-C stops it at the update boundary
            _, _, term, trunc, info = env.step(tokenizer.eos_token_id)
        assert stop.signum == signal.SIGINT and not (term or trunc) and info["env_tokens"]  # the episode goes on
        err = capsys.readouterr().err
        assert "textrl: error: interaction Exiting: respond() raised KeyboardInterrupt" in err
        env.reset(options={"prompt": "happy"})
        with pytest.raises(KeyboardInterrupt):  # outside a stage: Python's own Ctrl-C
            env.step(tokenizer.eos_token_id)
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("bad", ["</rev>", ("ok", ""), ("ok", 3)])
def test_stop_strings_must_be_a_tuple_or_list_of_non_empty_strings(tokenizer, bad):
    interaction = Scripted(stop_strings=bad)
    with pytest.raises(TextRLError, match=r"^interaction Scripted: stop_strings: got .*; expected a tuple or list"):
        single(tokenizer, interaction)


@pytest.mark.parametrize(
    "kw, key", [({"max_turns": 3}, "env.max_turns"), ({"turn_reward": "model"}, "env.turn_reward")]
)
def test_multiturn_settings_without_an_interaction_are_one_error_line(tokenizer, kw, key):
    with pytest.raises(TextRLError, match=rf"^{key}: got .* without an interaction; expected"):
        TokenGenEnv(tokenizer, PROMPTS, length_reward, max_new_tokens=4, max_prompt_tokens=8, **kw)
