"""Multi-turn SFT: a chat demonstration is laid out token for token as the multi-turn env lays out
the episode in which the policy samples the assistant turns, and the loss covers exactly those."""

from __future__ import annotations

import pytest

import textrl
from textrl.envs import TokenGenEnv
from textrl.errors import TextRLError
from textrl.stages.sft import IGNORE, encode_conversation
from textrl.training_examples import format_prompt, to_demonstration

from conftest import length_reward

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROW = {
    "messages": [
        {"role": "system", "content": "You tell short stories."},
        {"role": "user", "content": "Tell me about a dog."},
        {"role": "assistant", "content": "The dog ran to the park and said go"},
        {"role": "tool", "content": "The park was big."},
        {"role": "assistant", "content": "The dog played all day."},
        {"role": "user", "content": "What next?"},
        {"role": "assistant", "content": "He went home."},
    ]
}


class Replay(textrl.Interaction):
    """Appends the demonstration's next non-assistant message after each policy turn; ends after the
    last one. A policy turn also ends at the stop string ``go``."""

    stop_strings = ("go",)

    def __init__(self, messages):
        self.replies = [m for m in messages if m["role"] in ("user", "tool")][1:]

    def respond(self, episode):
        k = episode.policy_turns
        if k > len(self.replies):
            return textrl.Reply.end()
        return textrl.Reply.append(self.message_ids(self.replies[k - 1]["content"], role=self.replies[k - 1]["role"]))


@pytest.fixture
def chat_tokenizer(assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(assets / "tinystories-656k")
    tok.chat_template = CHATML
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def test_a_chat_row_splits_into_prompt_system_and_turns():
    demo = to_demonstration(ROW)
    assert demo.prompt == "Tell me about a dog." and demo.system == "You tell short stories."
    assert [role for role, _ in demo.turns] == ["assistant", "tool", "assistant", "user", "assistant"]
    assert demo.response == "The dog ran to the park and said go"
    single = to_demonstration({"messages": ROW["messages"][1:3]})
    assert single.turns == () and single.response == "The dog ran to the park and said go"
    with pytest.raises(TextRLError, match="roles"):
        to_demonstration({"messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]})


def test_the_loss_covers_exactly_the_assistant_turns(chat_tokenizer):
    tok = chat_tokenizer
    out = encode_conversation(tok, to_demonstration(ROW), max_length=512, stop_strings=("go",))
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == len(labels)
    trained = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert all(label in (IGNORE, i) for i, label in zip(ids, labels))
    eot = tok.convert_tokens_to_ids("<|im_end|>")

    def enc(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    # turn 1 ends at the stop string (no end-of-turn token), turns 2 and 3 with <|im_end|>
    expected = enc("The dog ran to the park and said go") + enc("The dog played all day.") + [eot]
    assert trained == expected + enc("He went home.") + [eot]
    masked_tail = tok.decode([i for i, label in zip(ids, labels) if label == IGNORE])
    assert "The park was big." in masked_tail and "What next?" in masked_tail and "tell short" in masked_tail


def test_the_demonstration_is_the_episode_the_env_builds_from_its_assistant_tokens(chat_tokenizer):
    tok = chat_tokenizer
    demo = to_demonstration(ROW)
    out = encode_conversation(tok, demo, max_length=512, system="unused: the row has its own", stop_strings=("go",))
    prompt_text = format_prompt(tok, demo.prompt, "auto", demo.system)
    env = TokenGenEnv(
        tokenizer=tok,
        prompts=[demo.prompt],
        reward_model=length_reward,
        max_new_tokens=16,
        max_prompt_tokens=64,
        format_prompt=lambda p: prompt_text,
        interaction=Replay(ROW["messages"]),
        max_turns=4,
        max_episode_tokens=128,
    )
    obs, _ = env.reset(options={"prompt": demo.prompt})
    actions = [i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE]
    done = False
    for a in actions:
        assert not done, "the env ended the episode before the demonstration's last policy token"
        obs, _, term, trunc, _ = env.step(a)
        done = term or trunc
    assert done
    kept = obs["attention_mask"].astype(bool)
    assert obs["input_ids"][kept].tolist() == out["input_ids"]
    assert obs["action_mask"][kept].tolist() == [int(label != IGNORE) for label in out["labels"]]


def test_a_long_conversation_is_cut_at_the_end(chat_tokenizer):
    full = encode_conversation(chat_tokenizer, to_demonstration(ROW), max_length=512)
    cut = encode_conversation(chat_tokenizer, to_demonstration(ROW), max_length=40)
    assert cut["input_ids"] == full["input_ids"][:40] and cut["labels"] == full["labels"][:40]
