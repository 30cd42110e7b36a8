"""reward=composite: the weighted sum, per-component scores through env → rollout → metrics and
samples, the factory's errors, and a CLI run of sentiment + RBRM on the real TinyStories assets."""

from __future__ import annotations


import pytest
import torch

from conftest import length_reward, make_policy
from textrl.envs.token_vector_env import TokenGenVectorEnv
from textrl.errors import TextRLError
from textrl.policies.sampling import SamplingConfig
from textrl.plugins import load_plugins
from textrl.rewards import CompositeReward, build_composite
from textrl.rewards.base import RewardOutput, score_responses
from textrl.rollout.collector import RolloutCollector
from textrl.stages.rl import sample_rows


def has_dog(prompts, responses):
    """1.0 when the response mentions a dog, else 0.0."""
    return torch.tensor([float("dog" in r.split()) for r in responses])


class Explained:
    """A reward that explains itself: -1 per word, details name the rule."""

    def __call__(self, prompts, responses):
        return self.score_with_details(prompts, responses).scores

    def score_with_details(self, prompts, responses):
        scores = torch.tensor([-float(len(r.split())) for r in responses])
        return RewardOutput(scores, details=[{"rule": f"words={len(r.split())}"} for r in responses])


def test_weighted_sum_and_unweighted_components_by_hand():
    reward = CompositeReward({"length": (0.5, length_reward), "dog": (2.0, has_dog)})
    out = reward.score_with_details(["p", "p"], ["the dog ran", "a cat"])
    # 0.5 * 3 + 2 * 1 = 3.5 ; 0.5 * 2 + 2 * 0 = 1.0
    assert out.scores.tolist() == [3.5, 1.0]
    assert out.components["length"].tolist() == [3.0, 2.0]
    assert out.components["dog"].tolist() == [1.0, 0.0]
    assert out.details is None
    assert torch.equal(reward(["p", "p"], ["the dog ran", "a cat"]), out.scores)


def test_component_details_are_kept_under_their_label():
    reward = CompositeReward({"len": (1.0, length_reward), "rules": (1.0, Explained())})
    out = reward.score_with_details(["p"], ["the dog ran"])
    assert out.scores.tolist() == [0.0]
    assert out.details == [{"rules": {"rule": "words=3"}}]


def test_bad_component_output_names_the_component():
    reward = CompositeReward({"ok": (1.0, length_reward), "broken": (1.0, lambda p, r: torch.ones(len(r) + 1))})
    with pytest.raises(TextRLError, match="reward component 'broken' returned shape"):
        score_responses(reward, ["p"], ["x"])


def test_component_that_raises_is_one_line():
    def boom(prompts, responses):
        raise RuntimeError("classifier fell over\nsecond line")

    with pytest.raises(TextRLError, match="reward component 'b' raised RuntimeError: classifier fell over;") as e:
        score_responses(CompositeReward({"b": (1.0, boom)}), ["p"], ["x"])
    assert "\n" not in str(e.value)


def test_factory_builds_registered_rewards_with_weights():
    reward = build_composite(
        {"sent": {"name": "sentiment", "weight": 2.0}, "rules": {"name": "rbrm", "weight": 0.5}},
        device="cpu",
        rewards=load_plugins(autoload=False).rewards,
    )
    out = reward.score_with_details(["How do I make a bomb?"], ["I'm sorry, I can't help with that."])
    expected = 2.0 * out.components["sent"] + 0.5 * out.components["rules"]
    assert torch.allclose(out.scores, expected)
    assert out.details[0]["rules"]["category"] == "harmful_request"


@pytest.mark.parametrize(
    "components, message",
    [
        ({"x": {"name": "no_such_reward"}}, "reward.components.x.name: got 'no_such_reward'; expected one of"),
        ({"x": {"weight": 1.0}}, "reward.components.x: got"),
        ({"x": {"name": "sentiment", "weight": "heavy"}}, "reward.components.x.weight: got 'heavy'"),
        ({"x": {"name": "sentiment", "weight": float("nan")}}, "reward.components.x.weight: got nan"),
        ({"x": {"name": "sentiment", "colour": "red"}}, "colour: not a parameter"),
        ({}, "reward.components: got no components"),
    ],
)
def test_factory_errors_name_the_component(components, message):
    with pytest.raises(TextRLError, match=message):
        build_composite(components, device="cpu", rewards=load_plugins(autoload=False).rewards)


def test_components_reach_the_rollout_batch_and_samples(tokenizer):
    reward = CompositeReward({"length": (1.0, length_reward), "rules": (1.0, Explained())})
    env = TokenGenVectorEnv(
        tokenizer,
        ["the movie was", "a dog"],
        reward,
        num_envs=4,
        max_new_tokens=5,
        max_prompt_tokens=4,
        autoreset_mode="disabled",
    )
    batch = RolloutCollector(env, make_policy(tokenizer), None, SamplingConfig(), seed=0).collect()
    words = torch.tensor([float(len(r.split())) for r in batch.responses])
    assert torch.equal(batch.reward_components["length"], words)
    assert torch.equal(batch.reward_components["rules"], -words)
    assert torch.equal(batch.scores, torch.zeros(4))
    rows = sample_rows(batch, 2)
    assert rows[1]["reward/length"] == float(words[1])
    assert rows[1]["details"] == {"rules": {"rule": f"words={int(words[1])}"}}
    sub = batch.select(torch.tensor([2]))
    assert sub.reward_details == [batch.reward_details[2]] and sub.reward_components["length"].tolist() == [words[2]]
