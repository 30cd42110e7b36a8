"""Learned reward models: a sequence classifier with one scalar output, trained by ``stage=rm``.

``reward=learned reward.model=<dir>`` loads a directory written by ``stage=rm`` (or any
``AutoModelForSequenceClassification`` with one output) and applies the normalisation stored in
``textrl_reward.json``: ``score = gain · (r(x, y) + bias)``, with the bias chosen so the
reference responses score 0 on average (InstructGPT normalises its RM so demonstrations score 0).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch

from textrl.devices import resolve_device
from textrl.errors import TextRLError
from textrl.policies.loading import (
    check_model_location,
    clear_gguf_quantizer,
    load_tokenizer,
    one_line,
    split_model_path,
)
from textrl.training_examples import format_prompt

NORMALIZATION_FILE = "textrl_reward.json"


def load_sequence_classifier(
    model: str,
    gguf_file: str | None = None,
    num_labels: int = 1,
    device: str | torch.device = "cpu",
    id2label: dict | None = None,
    key: str = "rm.model",
    trained: bool = False,
):
    """``(AutoModelForSequenceClassification, tokenizer)`` from a hub id, a directory (an SFT
    causal-LM directory gets a fresh score head) or a GGUF file.

    Args:
        key: the setting ``model`` came from, named in errors (``rm.model``, ``reward.model``).
        trained: require every weight, the score head included, to come from the checkpoint
            (a reward model); without it a missing head is initialised randomly (RM training).

    Raises:
        TextRLError: the model cannot be loaded, or ``trained`` and some weights (typically
            the score head of a plain causal LM) would be newly initialised.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    model, gguf_file = split_model_path(model, gguf_file)
    check_model_location(model, gguf_file)
    tokenizer = load_tokenizer(model, gguf_file)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if id2label:
        kwargs.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    verbosity = hf_logging.get_verbosity()
    if trained:
        hf_logging.set_verbosity_error()  # a missing head is reported below, in one line
    try:
        clf, info = AutoModelForSequenceClassification.from_pretrained(
            os.path.expanduser(model), num_labels=num_labels, dtype=torch.float32, output_loading_info=True, **kwargs
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise TextRLError(f"{key}: cannot load a sequence classifier from {model!r} ({one_line(e)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    if trained and missing:
        raise TextRLError(
            f"{key}: {model!r} has no trained weights for {missing[:3]} (they would be randomly "
            f"initialised, a random reward); expected a reward model directory written by stage=rm"
        )
    if gguf_file:
        clear_gguf_quantizer(clf)
    if len(tokenizer) > clf.get_input_embeddings().weight.shape[0]:
        clf.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    clf.config.pad_token_id = tokenizer.pad_token_id
    return clf.to(device), tokenizer


class RewardScorer:
    """Tokenises (prompt, response) pairs or texts and runs a sequence classifier.

    Args:
        model, tokenizer: from :func:`load_sequence_classifier`.
        max_length: tokens per text. Reward-model inputs keep their end (the response);
            classifier inputs keep their start, or with ``head_tokens=k`` the first k and the
            last ``max_length − k`` tokens (head+tail, Sun et al. 2019).
        prompt_format: how the prompt is written before the response (see
            :func:`textrl.training_examples.format_prompt`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_length: int = 256,
        prompt_format: str = "plain",
        head_tokens: int | None = None,
        device: str | torch.device = "cpu",
    ):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.prompt_format, self.head_tokens, self.device = prompt_format, head_tokens, torch.device(device)
        self.specials = tokenizer("", add_special_tokens=True)["input_ids"]
        budget = max_length - len(self.specials)
        if budget < 1:
            raise TextRLError(
                f"max_length: got {max_length}; expected more than the {len(self.specials)} special tokens"
            )
        if head_tokens is not None and not 0 < head_tokens < budget:
            raise TextRLError(
                f"rm.head_tokens: got {head_tokens}; expected 0 < head_tokens < {budget} "
                f"(max_length minus special tokens)"
            )

    def _encode(self, texts: Sequence[str], keep: str):
        budget = self.max_length - len(self.specials)
        rows = []
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            if len(ids) > budget:
                if keep == "end":
                    ids = ids[-budget:]
                elif self.head_tokens:
                    ids = ids[: self.head_tokens] + ids[-(budget - self.head_tokens) :]
                else:
                    ids = ids[:budget]
            rows.append(self.specials[:1] + ids + self.specials[1:])
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        return input_ids, mask

    def logits(self, texts: Sequence[str], keep: str = "start") -> torch.Tensor:
        """``(N, num_labels)`` logits of ``texts`` (with grad when the model is training)."""
        input_ids, mask = self._encode(texts, keep)
        return self.model(input_ids=input_ids, attention_mask=mask).logits.float()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """``(N,)`` scalar rewards r(x, y) of (prompt, response) pairs (raw, unnormalised)."""
        texts = [
            format_prompt(self.tokenizer, p, self.prompt_format) + " " + r.strip() for p, r in zip(prompts, responses)
        ]
        return self.logits(texts, keep="end")[:, 0]


class LearnedReward:
    """``reward=learned``: a trained reward model, normalised as stored with it.

    Args:
        model: directory written by ``stage=rm`` (or any one-output sequence classifier).
        batch_size: pairs per forward pass.
        normalize: apply the stored bias/gain (``textrl_reward.json``).
        device: where it runs (``auto`` picks the run's device).

    ``__call__(prompts, responses) -> FloatTensor[B]`` (float32, on the CPU).

    Raises:
        TextRLError: missing model, a model without a trained score head (a plain causal LM,
            whose head would be random), or a classifier with more than one output.
    """

    def __init__(self, model: str = "???", batch_size: int = 16, normalize: bool = True, device: str = "auto"):
        if not model or model == "???":
            raise TextRLError("reward.model: not set; expected the directory written by stage=rm")
        settings = {}
        path = os.path.join(os.path.expanduser(model), NORMALIZATION_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                settings = json.load(f)
        device = resolve_device(device)
        clf, tokenizer = load_sequence_classifier(model, device=device, key="reward.model", trained=True)
        if clf.config.num_labels != 1:
            raise TextRLError(
                f"reward.model: {model!r} has {clf.config.num_labels} outputs; expected a one-output "
                f"reward model (use reward=sentiment backend=classifier for a classifier)"
            )
        self.scorer = RewardScorer(
            clf.eval(),
            tokenizer,
            settings.get("max_length", 256),
            settings.get("prompt_format", "plain"),
            device=device,
        )
        norm = settings.get("normalization", {}) if normalize else {}
        self.bias, self.gain = float(norm.get("bias", 0.0)), float(norm.get("gain", 1.0))
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        out = [
            self.scorer.score(prompts[i : i + self.batch_size], responses[i : i + self.batch_size]).cpu()
            for i in range(0, len(prompts), self.batch_size)
        ]
        raw = torch.cat(out) if out else torch.zeros(0)
        return self.gain * (raw + self.bias)

    def score_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (1, H), bias (1,))`` of the normalised score head, to initialise a value head."""
        head = getattr(self.scorer.model, "score", None)
        if not isinstance(head, torch.nn.Linear):
            raise TextRLError(
                f"algo.value_init=reward_model: the reward model ({type(self.scorer.model).__name__}) "
                f"has no linear `score` head; expected a causal-LM-based reward model"
            )
        weight = head.weight.detach() * self.gain
        bias = (head.bias.detach() if head.bias is not None else torch.zeros(1)) + self.bias
        return weight.float(), (bias * self.gain).float()
