"""Per-turn rewards (``env.turn_reward=model``): the env scores each policy turn in context with the
reward model and pays it on the step that ends the turn; the collector puts each score on the turn's
last action token; an episode's rewards sum to its turn scores; ``final`` (the default) still pays
one whole-episode score at the end. The dialogue's hh-rlhf context and its held-out split."""

from __future__ import annotations

import copy
import gzip
import json

import pytest
import torch

import textrl
from textrl.envs import TokenGenEnv, TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.interactions import Dialogue
from textrl.interactions.base import EpisodeView, Turn
from textrl.interactions.dialogue import hh_dialogue_rows, is_heldout
from textrl.policies.sampling import SamplingConfig
from textrl.rollout.collector import RolloutCollector
from textrl.rollout.buffer import turn_metrics

PROMPTS = ["the dog ran", "a girl saw the cat", "this movie was", "happy"]


class TwoReplies(textrl.Interaction):
    """Appends "the park" after turn 1 and "a ball" after turn 2; ends after turn 3 (no turn rewards)."""

    replies = ("the park", "a ball")

    def respond(self, episode):
        k = episode.policy_turns
        if k > len(self.replies):
            return textrl.Reply.end()
        return textrl.Reply.append(self.tokenizer(self.replies[k - 1], add_special_tokens=False)["input_ids"])


class Recorder:
    """A reward model that records its calls: 1 + words in the reply + 0.1 · words in the context
    (always positive, and different for the same reply in another context)."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def __call__(self, prompts, responses):
        self.calls += list(zip(prompts, responses))
        return torch.tensor([1.0 + len(r.split()) + 0.1 * len(p.split()) for p, r in zip(prompts, responses)])


def score(context: str, reply: str) -> float:
    return float(torch.tensor(1.0 + len(reply.split()) + 0.1 * len(context.split())))


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def single(tokenizer, reward_model, turn_reward):
    return TokenGenEnv(
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=reward_model,
        max_new_tokens=4,
        max_prompt_tokens=8,
        interaction=TwoReplies(),
        max_turns=4,
        max_episode_tokens=24,
        turn_reward=turn_reward,
    )


def test_each_turn_is_scored_in_context_on_the_step_that_ends_it(tokenizer):
    rm = Recorder()
    env = single(tokenizer, rm, "model")
    eos, dog, cat = tokenizer.eos_token_id, *ids(tokenizer, "dog cat")
    env.reset(options={"prompt": "happy"})
    steps = [env.step(a) for a in (dog, cat, eos, cat, eos, dog, dog, eos)]
    rewards = [s[1] for s in steps]
    expected = [
        score("happy", "dog cat"),
        score("happy dog cat the park", "cat"),
        score("happy dog cat the park cat a ball", "dog dog"),
    ]
    assert rm.calls == [
        ("happy", "dog cat"),
        ("happy dog cat the park", "cat"),
        ("happy dog cat the park cat a ball", "dog dog"),
    ]
    assert rewards == [0.0, 0.0, expected[0], 0.0, expected[1], 0.0, 0.0, expected[2]]
    *_, terminated, truncated, info = steps[-1]
    assert terminated and not truncated and info["turns"] == 3
    assert info["score"] == pytest.approx(sum(expected)) and info["reward/model"] == pytest.approx(sum(expected))
    assert sum(rewards) == pytest.approx(sum(expected))


def test_a_turn_cut_by_its_token_budget_is_scored_too(tokenizer):
    rm = Recorder()
    env = single(tokenizer, rm, "model")
    dog = ids(tokenizer, "dog")[0]
    env.reset(options={"prompt": "happy"})
    for _ in range(3):
        assert env.step(dog)[1:3] == (0.0, False)
    obs, reward, terminated, truncated, info = env.step(dog)  # max_new_tokens=4: truncated, the turn scored
    assert truncated and not terminated and rm.calls == [("happy", "dog dog dog dog")]
    assert reward == pytest.approx(score("happy", "dog dog dog dog")) == info["score"]


def test_final_keeps_one_whole_episode_score_at_the_end(tokenizer):
    rm = Recorder()
    env = single(tokenizer, rm, "final")
    eos, dog = tokenizer.eos_token_id, ids(tokenizer, "dog")[0]
    env.reset(options={"prompt": "happy"})
    steps = [env.step(a) for a in (dog, eos, eos, eos)]
    assert [s[1] for s in steps[:-1]] == [0.0, 0.0, 0.0] and len(rm.calls) == 1
    prompt, response = rm.calls[0]
    assert prompt == "happy" and response == steps[-1][-1]["response"]
    assert steps[-1][1] == pytest.approx(score(prompt, response))


def test_an_unknown_turn_reward_is_one_error_line(tokenizer):
    with pytest.raises(TextRLError, match=r"^env.turn_reward: got 'each'; expected one of \['final', 'model'\]$"):
        single(tokenizer, Recorder(), "each")


def vector_batch(tokenizer, policy, reward_model, turn_reward):
    env = TokenGenVectorEnv(
        tokenizer,
        PROMPTS,
        reward_model,
        num_envs=4,
        max_new_tokens=4,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
        interaction=TwoReplies(),
        max_turns=3,
        max_episode_tokens=24,
        turn_reward=turn_reward,
    )
    return RolloutCollector(env, policy, copy.deepcopy(policy.lm), SamplingConfig(), seed=0).collect()


def turn_ends(action_mask):
    a = action_mask > 0
    following = torch.zeros_like(a)
    following[:, :-1] = a[:, 1:]
    return a & ~following


def test_the_collector_puts_each_turn_score_on_the_turns_last_action_token(tokenizer, policy):
    rm = Recorder()
    batch = vector_batch(tokenizer, policy, rm, "model")
    ends = turn_ends(batch.action_mask)
    assert ends.sum() == len(rm.calls) > batch.batch_size  # several turns per episode, each scored once
    assert torch.equal(batch.rewards != 0, ends)  # every score (all > 0) at a turn end, nothing elsewhere
    assert torch.allclose(batch.rewards.sum(1), batch.scores)  # an episode's rewards sum to its turn scores
    per_turn = batch.turn_rewards()
    assert sorted(r for turns in per_turn for r in turns) == pytest.approx(sorted(score(p, r) for p, r in rm.calls))
    metrics = turn_metrics(per_turn)
    assert metrics["turn/reward_mean"] == pytest.approx(float(batch.rewards.sum() / ends.sum()))
    assert metrics["turn/reward_1"] == pytest.approx(sum(t[0] for t in per_turn) / len(per_turn))


def test_by_default_a_multiturn_batch_has_one_reward_per_episode_at_its_end(tokenizer, policy):
    rm = Recorder()
    batch = vector_batch(tokenizer, policy, rm, "final")
    assert len(rm.calls) == batch.batch_size  # one whole-episode call per episode
    last = (batch.action_mask > 0).long().cumsum(1).argmax(1)  # each row's last action token
    expected = torch.zeros_like(batch.rewards)
    expected[torch.arange(batch.batch_size), last] = batch.scores
    assert torch.allclose(batch.rewards, expected)


def conversation(tmp_path, rows):
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for chosen in rows:
            f.write(json.dumps({"chosen": chosen, "rejected": chosen + " no"}) + "\n")
    return str(path)


def test_the_dialogue_writes_the_hh_rlhf_context_of_each_turn(tmp_path, tokenizer):
    path = conversation(tmp_path, ["\n\nHuman: the dog\n\nAssistant: ok\n\nHuman: the park\n\nAssistant: fine"])
    for layout, prompt in (("hh", "\n\nHuman: the dog\n\nAssistant:"), ("text", "the dog")):
        dialogue = Dialogue(path=path, prompt_layout=layout)
        dialogue.setup(tokenizer)
        assert dialogue.prompts == [prompt]
        r1, r2 = ids(tokenizer, "happy <eos>"), ids(tokenizer, "sad")
        view1 = EpisodeView(prompt, (), (Turn("policy", tuple(r1), ""),))
        assert dialogue.reward_input(view1) == ("\n\nHuman: the dog\n\nAssistant:", "happy")
        env = Turn("env", tuple(dialogue.respond(view1).ids), "")
        view2 = EpisodeView(prompt, (), (Turn("policy", tuple(r1), ""), env, Turn("policy", tuple(r2), "")))
        assert dialogue.reward_input(view2) == (
            "\n\nHuman: the dog\n\nAssistant: happy\n\nHuman: the park\n\nAssistant:",
            "sad",
        )


def test_the_held_out_split_is_deterministic_and_disjoint(tmp_path):
    firsts = [f"question number {i}" for i in range(200)]
    path = conversation(tmp_path, [f"\n\nHuman: {q}\n\nAssistant: a\n\nHuman: more\n\nAssistant: b" for q in firsts])
    train, heldout = hh_dialogue_rows("train", path), hh_dialogue_rows("heldout", path)
    assert len(train) + len(heldout) == 200 and 20 < len(heldout) < 80  # about 25%
    assert not {r["chosen"] for r in train} & {r["chosen"] for r in heldout}
    assert [is_heldout(q) for q in firsts] == [is_heldout(q) for q in firsts]
    dialogue = Dialogue(path=path, eval_path=path)
    assert dialogue.prompts == dialogue.eval_prompts  # the same file twice: the split is the caller's choice
    with pytest.raises(ValueError, match="expected a split"):
        hh_dialogue_rows("test", path)
