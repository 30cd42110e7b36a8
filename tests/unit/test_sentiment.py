"""SentimentReward (VADER and a tiny random classifier built in code) and check_scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from textrl.errors import TextRLError
from textrl.rewards.base import check_scores
from textrl.rewards.sentiment import SentimentReward

WORDS = "i loved hated this wonderful awful movie film the was a very good bad and it".split()


def classifier_tokenizer():
    """A word-level BERT-style tokenizer: [PAD]=0 [UNK] [CLS] [SEP], then WORDS; adds [CLS] … [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def build_classifier(directory, seed: int = 0):
    """Save a tiny random 2-label BertForSequenceClassification and its tokenizer to ``directory``."""
    from transformers import BertConfig, BertForSequenceClassification

    tok = classifier_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
        pad_token_id=0,
        initializer_range=0.5,
    )  # large init: logits that depend on the input
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return model, tok


def expected_logits(model, tok, texts):
    """Each text's logits, one unpadded forward pass per text."""
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tok(text, return_tensors="pt")
            rows.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0])
    return torch.stack(rows)


CLF_PROMPTS = ["the movie was", "it", "a film"]
CLF_RESPONSES = ["very good", "was awful and bad and the film was bad", "i loved this wonderful movie"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clf")
    model, tok = build_classifier(directory)
    return directory, model, tok


# ---------------------------------------------------------------------------------------------
# VADER
# ---------------------------------------------------------------------------------------------


def test_vader_positive_and_negative():
    reward = SentimentReward(backend="vader")
    scores = reward(["", ""], ["I loved this wonderful movie", "I hated this awful movie"])
    assert scores.dtype == torch.float32
    assert scores.shape == (2,)
    assert scores[0].item() > 0.5
    assert scores[1].item() < -0.5
    assert torch.all(scores.abs() <= 1.0)


def test_vader_include_prompt_scores_prompt_plus_response():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    prompts = ["I loved this wonderful movie. "]
    responses = ["The ending was terrible."]
    analyzer = SentimentIntensityAnalyzer()
    response_only = analyzer.polarity_scores(responses[0])["compound"]
    joined = analyzer.polarity_scores(prompts[0] + responses[0])["compound"]
    assert response_only != pytest.approx(joined, abs=1e-3)  # the example discriminates

    plain = SentimentReward(backend="vader")(prompts, responses)
    with_prompt = SentimentReward(backend="vader", include_prompt=True)(prompts, responses)
    assert plain.item() == pytest.approx(response_only, abs=1e-6)
    assert with_prompt.item() == pytest.approx(joined, abs=1e-6)


def test_unknown_backend():
    with pytest.raises(TextRLError) as e:
        SentimentReward(backend="textblob")
    assert "textblob" in str(e.value)


# ---------------------------------------------------------------------------------------------
# classifier
# ---------------------------------------------------------------------------------------------


def test_classifier_returns_positive_logits(classifier_dir):
    directory, model, tok = classifier_dir
    # batch_size=2 with 3 texts of different lengths exercises batching and padding
    reward = SentimentReward(backend="classifier", model=str(directory), batch_size=2)
    scores = reward(CLF_PROMPTS, CLF_RESPONSES)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    expected = expected_logits(model, tok, CLF_RESPONSES)[:, 1]
    assert (expected.max() - expected.min()).item() > 0.1  # the logits depend on the text
    assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    # a random classifier's two logits differ, so picking the wrong column would fail
    assert not torch.allclose(expected, expected_logits(model, tok, CLF_RESPONSES)[:, 0], atol=1e-3)


def test_classifier_include_prompt(classifier_dir):
    directory, model, tok = classifier_dir
    reward = SentimentReward(backend="classifier", model=str(directory), include_prompt=True)
    joined = [p + r for p, r in zip(CLF_PROMPTS, CLF_RESPONSES)]  # the reward scores prompt + response
    scores = reward(CLF_PROMPTS, CLF_RESPONSES)
    assert_close(scores, expected_logits(model, tok, joined)[:, 1], rtol=1e-5, atol=1e-5)
    # and that differs from scoring the responses alone
    assert not torch.allclose(scores, expected_logits(model, tok, CLF_RESPONSES)[:, 1], atol=1e-4)


@pytest.mark.parametrize("label, index", [("1", 1), ("POSITIVE", 1), ("positive", 1), ("0", 0), ("Negative", 0)])
def test_classifier_positive_label_picks_index(classifier_dir, label, index):
    directory, model, tok = classifier_dir
    reward = SentimentReward(backend="classifier", model=str(directory), positive_label=label)
    expected = expected_logits(model, tok, CLF_RESPONSES)[:, index]
    assert_close(reward(CLF_PROMPTS, CLF_RESPONSES), expected, rtol=1e-5, atol=1e-5)


def test_classifier_unknown_label_lists_labels(classifier_dir):
    directory, _, _ = classifier_dir
    with pytest.raises(TextRLError) as e:
        SentimentReward(backend="classifier", model=str(directory), positive_label="neutral")
    msg = str(e.value)
    assert "neutral" in msg and "negative" in msg and "positive" in msg


def test_classifier_missing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TextRLError) as e:
        SentimentReward(backend="classifier", model="./does-not-exist")
    assert "does-not-exist" in str(e.value)


def test_classifier_without_model():
    with pytest.raises(TextRLError, match="reward.model"):
        SentimentReward(backend="classifier")


# ---------------------------------------------------------------------------------------------
# check_scores
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores",
    [
        torch.zeros(3),  # wrong length
        torch.zeros(2, 1),  # wrong rank
        torch.tensor(1.0),  # scalar
        torch.tensor([0.5, math.nan]),
        torch.tensor([math.inf, 0.0]),
        "ab",
        torch.tensor([True, False]),
    ],
    ids=["len3", "2x1", "scalar", "nan", "inf", "string", "bool"],
)
def test_check_scores_rejects(scores):
    with pytest.raises(TextRLError) as e:
        check_scores(scores, 2, name="my_rm")
    assert "my_rm" in str(e.value)


def test_check_scores_converts_ints_and_numpy():
    out = check_scores([1, 2, 3], 3)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([1.0, 2.0, 3.0]))
    out2 = check_scores(np.array([0.25, -1.5], dtype=np.float64), 2)
    assert out2.dtype == torch.float32
    assert torch.equal(out2, torch.tensor([0.25, -1.5]))
