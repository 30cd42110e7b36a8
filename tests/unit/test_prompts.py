"""load_prompts: the builtin set, every file format, max_prompts, prefix_tokens, the errors, and
the real TinyStories asset (skipped when ../shared/assets is absent)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from textrl.prompts import load_prompts
from textrl.errors import TextRLError

ASSETS_DIR = Path(__file__).resolve().parents[3] / "shared" / "assets"

TEXTS = ["the cat sat on the mat", "a dog ran in the park today", "my film was very good"]


def word_tokenizer(words):
    """A word-level tokenizer over ``words`` (whitespace split), wrapped for transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------


def test_builtin_prompts():
    prompts = load_prompts("builtin")
    assert all(isinstance(p, str) and p.strip() == p and p for p in prompts)
    assert len(set(prompts)) >= 64


def test_txt_one_prompt_per_line_blank_lines_dropped(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(
        "  the cat sat on the mat \n\n\t\na dog ran in the park today\nmy film was very good\n", encoding="utf-8"
    )
    assert load_prompts(str(path)) == TEXTS


def test_json_list_of_strings(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(TEXTS), encoding="utf-8")
    assert load_prompts(str(path)) == TEXTS


def test_json_list_of_objects_with_text(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"id": i, "text": t} for i, t in enumerate(TEXTS)]), encoding="utf-8")
    assert load_prompts(str(path)) == TEXTS


def test_json_object_holding_a_list(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "demo", "prompts": TEXTS}), encoding="utf-8")
    assert load_prompts(str(path)) == TEXTS


def test_jsonl_with_text_field(tmp_path):
    path = tmp_path / "p.jsonl"
    # "text" is a decoy that the default field order would pick; text_field selects "body"
    lines = [json.dumps({"text": "decoy", "body": t}) for t in TEXTS]
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    assert load_prompts(str(path), text_field="body") == TEXTS
    assert load_prompts(str(path)) == ["decoy"] * 3


def test_csv(tmp_path):
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "review"])
        for i, t in enumerate(TEXTS):
            w.writerow([i, t])
    assert load_prompts(str(path)) == TEXTS


def test_csv_with_text_field_and_quoted_commas(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('label,sentence\n1,"well, it was fun"\n0,not fun\n', encoding="utf-8")
    assert load_prompts(str(path), text_field="sentence") == ["well, it was fun", "not fun"]


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for t in TEXTS:
            f.write(json.dumps({"prompt": t}) + "\n")
    assert load_prompts(str(path)) == TEXTS


def test_max_prompts(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(TEXTS), encoding="utf-8")
    assert load_prompts(str(path), max_prompts=2) == TEXTS[:2]
    assert load_prompts(str(path), max_prompts=10) == TEXTS
    assert len(load_prompts("builtin", max_prompts=5)) == 5


def test_prefix_tokens_cuts_to_first_k_words(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(TEXTS), encoding="utf-8")
    tok = word_tokenizer(" ".join(TEXTS).split())
    out = load_prompts(str(path), prefix_tokens=3, tokenizer=tok)
    assert out == [" ".join(t.split()[:3]) for t in TEXTS]
    assert out == ["the cat sat", "a dog ran", "my film was"]
    # k larger than a prompt keeps it whole
    assert load_prompts(str(path), prefix_tokens=100, tokenizer=tok) == TEXTS


def test_prefix_tokens_range_draws_each_length_from_min_to_max_seeded():
    words = [f"w{i}" for i in range(12)]
    texts = [" ".join(words)] * 400
    tok = word_tokenizer(words)
    out = load_prompts(texts, prefix_tokens=[2, 5], tokenizer=tok, seed=3)
    lengths = [len(t.split()) for t in out]
    assert set(lengths) == {2, 3, 4, 5}  # both ends included, nothing outside
    assert all(t == " ".join(words[:n]) for t, n in zip(out, lengths))  # always the text's first tokens
    assert load_prompts(texts, prefix_tokens=[2, 5], tokenizer=tok, seed=3) == out
    assert load_prompts(texts, prefix_tokens=[2, 5], tokenizer=tok, seed=4) != out
    # a one-point range is the fixed cut
    assert load_prompts(texts, prefix_tokens=[4, 4], tokenizer=tok) == load_prompts(
        texts, prefix_tokens=4, tokenizer=tok
    )


def test_sample_draws_distinct_prompts_seeded(tmp_path):
    texts = [f"review {i}" for i in range(50)]
    drawn = load_prompts(texts, sample=10, seed=1)
    assert len(set(drawn)) == 10 and set(drawn) <= set(texts)
    assert drawn != texts[:10]  # not the file's head (IMDB files are sorted by label)
    assert load_prompts(texts, sample=10, seed=1) == drawn
    assert load_prompts(texts, sample=100, seed=1) != texts and sorted(load_prompts(texts, sample=100)) == sorted(texts)


def test_prefix_of_long_real_reviews_matches_whole_text_tokenization(assets):
    """The prefix cut tokenizes only each review's head; it must equal cutting the whole text."""
    from transformers import AutoTokenizer

    from textrl.prompts import cut_to_prefix

    tok = AutoTokenizer.from_pretrained(assets / "tinystories-656k")
    reviews = load_prompts(str(assets / "imdb" / "test_5k.jsonl.gz"), text_field="text", sample=200, seed=0)
    for k in (2, 8, 40):
        whole = [
            tok.decode(tok(r, add_special_tokens=False)["input_ids"][:k], skip_special_tokens=True).strip()
            for r in reviews
        ]
        assert cut_to_prefix(reviews, k, tok) == [w for w in whole if w]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(TextRLError) as e:
        load_prompts(path)
    assert path in str(e.value)


@pytest.mark.parametrize(
    "name, content", [("empty.txt", ""), ("blank.txt", "\n  \n\n"), ("empty.json", ""), ("empty_list.json", "[]")]
)
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TextRLError) as e:
        load_prompts(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("name, content", [("bad.json", '["a", "b"'), ("bad.jsonl", '{"text": "a"}\n{oops}\n')])
def test_invalid_json(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TextRLError) as e:
        load_prompts(str(path))
    assert str(path) in str(e.value)
    assert "JSON" in str(e.value)


def test_rows_without_text_field_list_their_keys(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"title": "x", "body": "y"}]), encoding="utf-8")
    with pytest.raises(TextRLError) as e:
        load_prompts(str(path))
    msg = str(e.value)
    assert "title" in msg and "body" in msg
    assert str(path) in msg
    # an explicit text_field that the rows lack is named too
    with pytest.raises(TextRLError) as e:
        load_prompts(str(path), text_field="sentence")
    assert "sentence" in str(e.value) and "title" in str(e.value)


def test_prefix_tokens_zero():
    tok = word_tokenizer(["x"])
    with pytest.raises(TextRLError) as e:
        load_prompts("builtin", prefix_tokens=0, tokenizer=tok)
    assert "prefix_tokens" in str(e.value) and "0" in str(e.value)


@pytest.mark.parametrize("bad", [[0, 3], [5, 2], [2], [2, 3, 4], ["2", "8"], [2.0, 8], True, "2-8", -1])
def test_prefix_tokens_bad_range_is_one_clear_error(bad):
    tok = word_tokenizer(["x"])
    with pytest.raises(TextRLError) as e:
        load_prompts("builtin", prefix_tokens=bad, tokenizer=tok)
    assert str(e.value).startswith(f"data.prefix_tokens: got {bad!r}; expected")


def test_prefix_tokens_without_tokenizer():
    with pytest.raises(TextRLError, match="tokenizer"):
        load_prompts("builtin", prefix_tokens=3)


def test_max_prompts_zero():
    with pytest.raises(TextRLError) as e:
        load_prompts("builtin", max_prompts=0)
    assert "max_prompts" in str(e.value) and "0" in str(e.value)


# ---------------------------------------------------------------------------------------------
# the real asset
# ---------------------------------------------------------------------------------------------


def test_real_tinystories_asset_loads_1000_prompts():
    path = ASSETS_DIR / "tinystories-text" / "tinystories_1000.json"
    if not path.is_file():
        pytest.skip(f"real asset {path} not found (put shared/assets beside the repo to run this test)")
    prompts = load_prompts(str(path))
    assert len(prompts) == 1000
    assert all(p and p == p.strip() for p in prompts)


def test_hh_rlhf_rows_give_their_first_human_turn(tmp_path):
    rows = [
        {
            "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help.\n\nHuman: Please?\n\nAssistant: No.",
            "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a pin.",
        }
    ]
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert load_prompts(str(path)) == ["How do I pick a lock?"]


def test_real_hh_rlhf_prompts_are_single_human_turns():
    path = ASSETS_DIR / "hh-rlhf-harmless-test" / "harmless-base-test.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"hh-rlhf assets not found at {path}")
    prompts = load_prompts(str(path))
    assert len(prompts) == 2312
    assert not any("Human:" in p or "Assistant:" in p for p in prompts)
