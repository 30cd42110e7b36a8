"""Data sources ``"<name>:<split>"``: they resolve through the :class:`DataSources` table passed
explicitly (prompts, SFT/RM rows, the dialogue interaction, a plugin factory built from config),
an unknown split or name is one error line naming the key, and a path or a table-less call reads
files only."""

from __future__ import annotations

import json

import pytest

from textrl.config import build_plugin, signature_schema
from textrl.data_sources import DataSources, parse_source
from textrl.prompts import load_prompts
from textrl.errors import TextRLError
from textrl.interactions import Dialogue
from textrl.training_examples import read_rows

ROWS = {
    "train": [{"prompt": "the dog ran", "response": "fun"}, {"prompt": "a cat", "response": "sad"}],
    "heldout": [{"prompt": "the park", "response": "good"}],
}
DIALOGUES = [
    {"chosen": "\n\nHuman: the dog\n\nAssistant: a cat\n\nHuman: the park\n\nAssistant: fun"},
    {"chosen": "\n\nHuman: a ball\n\nAssistant: x\n\nHuman: it ran\n\nAssistant: y"},
]


def toy_rows(split: str) -> list[dict]:
    """A generated dataset with the ``textrl_datasets`` contract: ``ValueError`` for a bad split."""
    if split not in ROWS:
        raise ValueError(f"expected a split in {list(ROWS)}")
    return [dict(row) for row in ROWS[split]]


def dialogue_rows(split: str) -> list[dict]:
    if split != "train":
        raise ValueError("expected a split in ['train']")
    return DIALOGUES


SOURCES = DataSources({"toy": toy_rows, "talks": dialogue_rows})


def test_parse_source_accepts_only_name_colon_split():
    assert parse_source("toy:train") == ("toy", "train")
    assert parse_source("data/prompts.jsonl") is None
    assert parse_source("owner/name") is None
    assert parse_source("toy:train.jsonl") is None and parse_source("C:/x") is None


def test_a_source_resolves_through_the_table_passed_to_each_reader():
    assert load_prompts("toy:train", sources=SOURCES) == ["the dog ran", "a cat"]
    assert load_prompts("toy:heldout", sources=SOURCES) == ["the park"]
    assert read_rows("toy:heldout", key="sft.data", sources=SOURCES) == ROWS["heldout"]
    other = DataSources({"toy": lambda split: [{"prompt": f"other {split}"}]})
    assert load_prompts("toy:train", sources=other) == ["other train"]  # the table given, no other


def test_an_unknown_split_is_one_error_line_naming_the_key():
    for read, key in (
        (lambda: load_prompts("toy:test", sources=SOURCES), "data.prompts"),
        (lambda: read_rows("toy:test", key="rm.eval_data", sources=SOURCES), "rm.eval_data"),
        (lambda: Dialogue(path="talks:heldout", sources=SOURCES), "interaction.path"),
    ):
        with pytest.raises(TextRLError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{key}: got '") and "expected a split in [" in message, message
        assert "\n" not in message


def test_an_unknown_name_lists_the_generated_datasets():
    with pytest.raises(TextRLError, match=r"^sft.data: got 'toys:train'; expected <name>:<split> .*\['talks', 'toy'\]"):
        read_rows("toys:train", key="sft.data", sources=SOURCES)
    with pytest.raises(TextRLError, match=r"^data.prompts: got 'toy:train'; expected <name>:<split> .*\[\]"):
        load_prompts("toy:train")  # no table: nothing generated resolves


def test_an_existing_file_named_like_a_source_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes:draft").write_text("one prompt\nanother\n")
    assert load_prompts("notes:draft", sources=SOURCES) == ["one prompt", "another"]


def test_the_dialogue_reads_its_conversations_from_the_table(tmp_path):
    dialogue = Dialogue(path="talks:train", sources=SOURCES)
    assert dialogue.prompts == ["\n\nHuman: the dog\n\nAssistant:", "\n\nHuman: a ball\n\nAssistant:"]
    assert dialogue.followups["\n\nHuman: a ball\n\nAssistant:"] == ["it ran"]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in DIALOGUES[:1]))
    assert Dialogue(path=str(path)).prompts == ["\n\nHuman: the dog\n\nAssistant:"]  # a file needs no table


def test_build_plugin_hands_the_table_to_a_factory_that_declares_sources():
    seen = {}

    def reads_data(path: str = "toy:train", *, sources=None):
        seen["rows"] = sources.rows(path, "interaction.path")
        return "built"

    def reads_nothing(path: str = "x"):
        return path

    table = {"reads": reads_data, "plain": reads_nothing}
    assert build_plugin("interaction", {"name": "reads", "path": "toy:heldout"}, table, sources=SOURCES) == "built"
    assert seen["rows"] == ROWS["heldout"]
    assert build_plugin("interaction", {"name": "plain"}, table, sources=SOURCES) == "x"
    assert "sources" not in {f for f in signature_schema("interaction", "reads", reads_data).__dataclass_fields__}
    with pytest.raises(TextRLError, match=r"^interaction.sources: not a parameter"):
        build_plugin("interaction", {"name": "reads", "sources": "x"}, table, sources=SOURCES)


def test_the_table_is_read_only():
    datasets = {"toy": toy_rows}
    sources = DataSources(datasets)
    datasets["late"] = toy_rows
    assert sources.names == ["toy"]
    with pytest.raises(TypeError):
        sources.datasets["x"] = toy_rows
