"""The interaction contract and the built-ins: the safe calculator, hh-rlhf dialogue replay, the
``textrl_interactions`` hook with an outside-style plugin (public API only)."""

from __future__ import annotations

import gzip
import json

import pytest

import textrl
from textrl.errors import TextRLError
from textrl.interactions import CalcError, Calculator, Dialogue, safe_eval
from textrl.plugins import describe, load_plugins

from conftest import make_tokenizer


@pytest.mark.parametrize(
    "expr, value",
    [
        ("12*(3+4)", 84),
        ("2**10", 1024),
        ("-3 + +4", 1),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("1/4", 0.25),
        ("((((1+2))))*3", 9),
        ("2.5*2", 5.0),
        ("2**-1", 0.5),
    ],
)
def test_safe_eval_computes_arithmetic(expr, value):
    result = safe_eval(expr)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    "expr, why",
    [
        ("__import__('os').system('true')", "unsupported"),
        ("x + 1", "unsupported"),
        ("'a' * 3", "unsupported"),
        ("True + 1", "unsupported"),
        ("1 < 2", "unsupported"),
        ("(1).real", "unsupported"),
        ("1 +", "cannot parse"),
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "zero to a negative"),
        ("9**9**9", "exponent"),
        ("2**64 * 2**64", "larger"),
        ("10.0**40", "larger"),
        ("1e308 * 10", "larger"),
        ("1" * 300, "characters"),
        ("+".join(["1"] * 40), "parts"),
        ("(" * 150 + "1" + ")" * 150, "characters"),
        ("-" * 150 + "1", "parts"),
        ("(-8) ** 0.5", "complex"),
    ],
)
def test_safe_eval_refuses_bad_huge_and_nested_expressions(expr, why):
    with pytest.raises(CalcError, match=why):
        safe_eval(expr)


def test_safe_eval_never_evaluates_names_even_inside_allowed_operators():
    # a call nested deep in arithmetic is found by the walk, not executed
    with pytest.raises(CalcError, match="unsupported Call"):
        safe_eval("1 + 2 * (3 - exit())")


def episode(prompt, *turns):
    return textrl.EpisodeView(prompt, (1,), tuple(textrl.Turn(role, (), text) for role, text in turns))


def test_calculator_answers_the_last_call_and_ends_on_a_final_answer():
    tok = make_tokenizer()
    calc = Calculator(call_reward=0.5, error_reward=-1.0)
    calc.setup(tok)
    reply = calc.respond(episode("p", ("policy", "so <calc>1+1</calc> and <calc>6*7</calc>")))
    assert not reply.done and reply.reward == 0.5
    assert list(reply.ids) == textrl.message_ids(tok, "42", role="tool")
    bad = calc.respond(episode("p", ("policy", "<calc>1/0</calc>")))
    assert not bad.done and bad.reward == -1.0
    assert list(bad.ids) == textrl.message_ids(tok, "error: division by zero", role="tool")
    assert calc.respond(episode("p", ("policy", "<calc>2</calc>"), ("env", "2"), ("policy", "it is 2"))).done


def test_message_ids_without_a_chat_template_use_the_hh_layout():
    tok = make_tokenizer()
    ids = textrl.message_ids(tok, "the dog", role="user")
    assert ids == tok("\n\nHuman: the dog\n\nAssistant:", add_special_tokens=False)["input_ids"]
    assert tok.bos_token_id not in ids and tok.convert_ids_to_tokens(ids)[2:4] == ["the", "dog"]
    with pytest.raises(ValueError, match="role"):
        textrl.message_ids(tok, "x", role="system")


def test_message_ids_take_the_chat_templates_delimiters():
    tok = make_tokenizer()
    # user turns open with "the", assistant turns with "a"; every turn closes with <eos> (the end-of-turn)
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' %}the {% else %}a {% endif %}"
        "{{ m.content }}<eos>{% endfor %}{% if add_generation_prompt %}a {% endif %}"
    )
    # the policy emitted its own <eos>: then the user header, the message, its end, the next assistant header
    tokens = tok.convert_ids_to_tokens(textrl.message_ids(tok, "dog", role="user"))
    assert tokens == ["the", "dog", "<eos>", "a"]


def write_hh(path, transcripts):
    with gzip.open(path, "wt") as f:
        for t in transcripts:
            f.write(json.dumps({"chosen": t, "rejected": t}) + "\n")


def test_dialogue_replays_the_next_human_turn_then_ends(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    write_hh(
        path,
        [
            "\n\nHuman: the dog\n\nAssistant: a cat\n\nHuman: the park\n\nAssistant: fun\n\nHuman: sad"
            "\n\nAssistant: ok",
            "\n\nHuman: only one\n\nAssistant: x",
        ],
    )
    tok = make_tokenizer()
    dialogue = Dialogue(path=str(path))
    dialogue.setup(tok)
    assert dialogue.prompts == ["\n\nHuman: the dog\n\nAssistant:"]  # the one-turn conversation is skipped
    p = dialogue.prompts[0]
    first = dialogue.respond(episode(p, ("policy", "x")))
    assert list(first.ids) == textrl.message_ids(tok, "the park", role="user")
    second = dialogue.respond(episode(p, ("policy", "x"), ("env", "the park"), ("policy", "y")))
    assert list(second.ids) == textrl.message_ids(tok, "sad", role="user")
    assert dialogue.respond(
        episode(p, ("policy", "x"), ("env", ""), ("policy", "y"), ("env", ""), ("policy", "z"))
    ).done
    assert dialogue.respond(episode("unknown prompt", ("policy", "x"))).done


def test_dialogue_reads_the_hh_rlhf_assets(assets):
    dialogue = Dialogue(path=str(assets / "hh-rlhf-harmless-test" / "harmless-base-test.jsonl.gz"), max_conversations=5)
    assert len(dialogue.prompts) == 5
    assert all(p.startswith("\n\nHuman: ") and p.endswith("\n\nAssistant:") for p in dialogue.prompts)
    assert all(len(v) >= 1 for v in dialogue.followups.values())


def test_dialogue_bad_path_is_one_error_line(tmp_path):
    with pytest.raises(TextRLError, match=r"^interaction.path: cannot read .*; expected"):
        Dialogue(path=str(tmp_path / "missing.jsonl.gz"))


class Echo(textrl.Interaction):
    """An outside-style interaction: repeats the policy's last turn once, with a reward."""

    config_checks = {"reward": textrl.number(ge=0)}

    def __init__(self, reward: float = 1.0):
        self.reward = reward

    def respond(self, episode):
        if episode.policy_turns > 1:
            return textrl.Reply.end(reward=self.reward)
        return textrl.Reply.append(self.message_ids(episode.last.text, role="user"), reward=self.reward)


class EchoPlugin:
    @textrl.hookimpl
    def textrl_interactions(self):
        return {"echo": Echo}


def test_builtin_interactions_and_an_outside_plugin_come_through_the_hook():
    registry = load_plugins(autoload=False)
    assert {"calculator", "dialogue"} <= set(registry.interactions)
    assert "interaction=calculator" in describe(registry)
    registry.manager.register(EchoPlugin(), name="echo-plugin")
    from textrl.plugins import collect_factories

    collect_factories(registry)
    assert registry.interactions["echo"] is Echo
    assert "echo-plugin: interaction=echo" in describe(registry)
    with pytest.raises(TextRLError, match="interaction name 'echo' is provided by two plugins"):
        registry.manager.register(type("Again", (EchoPlugin,), {})(), name="again")
        collect_factories(registry)


def test_readme_interaction_plugin_example_works_as_written(tmp_path, monkeypatch):
    """The plugins guide's interaction plugin (``docs/guides/plugins.md``), loaded as an outside module, registers
    through the hook and answers a tool call through the public API only."""
    import importlib
    import re

    from conftest import REPO
    from textrl.plugins import collect_factories

    readme = (REPO / "docs" / "guides" / "plugins.md").read_text()
    source = re.search(r"```python\n# my-tool/my_tool.py\n(.*?)```", readme, re.S).group(1)
    assert "from textrl." not in source and "import textrl\n" in source  # public API only
    (tmp_path / "my_tool.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("my_tool")
    registry = load_plugins(autoload=False)
    registry.manager.register(module, name="my_tool")
    collect_factories(registry)
    assert "my_tool: interaction=reverse" in describe(registry)
    tool = registry.interactions["reverse"](call_reward=0.25)
    tok = make_tokenizer()
    tool.setup(tok)
    reply = tool.respond(episode("p", ("policy", "so <rev>god eht</rev>")))
    assert list(reply.ids) == textrl.message_ids(tok, "the dog", role="tool") and reply.reward == 0.25
    assert tool.respond(episode("p", ("policy", "no call"))).done
    with pytest.raises(TextRLError, match=r"^interaction.call_reward: got 'x'; expected a number"):
        registry.interactions["reverse"].config_checks["call_reward"]("interaction.call_reward", "x")


def test_message_ids_follow_a_chatml_template_with_a_default_system_prompt(assets):
    """A ChatML template that injects a system prompt: the message comes out as the template puts it
    after the assistant's ``<|im_end|>`` (which the policy emits itself, and which ends its turn)."""
    from transformers import AutoTokenizer

    from textrl.interactions import end_of_turn_id

    tok = AutoTokenizer.from_pretrained(assets / "tinystories-656k")
    tok.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    ids = textrl.message_ids(tok, "Hello there", role="user")
    assert tok.decode(ids) == "\n<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>") and ids.count(end_of_turn_id(tok)) == 1
