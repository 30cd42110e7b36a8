"""Sentiment reward: how positive the response reads.

Two backends:

- ``vader``: the VADER lexicon's compound score (Hutto & Gilbert 2014), in [-1, 1]; no weights,
  instant on CPU.
- ``classifier``: any ``AutoModelForSequenceClassification`` (hub id or local directory); the
  score is the logit of the positive label (TRL's gpt2-sentiment recipe uses the same).

By default only the response is scored; ``include_prompt=True`` scores prompt + response.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch

from textrl.config import integer, one_of
from textrl.devices import resolve_device
from textrl.errors import TextRLError, first_line
from textrl.rewards.learned import NORMALIZATION_FILE, RewardScorer

BACKENDS = ("vader", "classifier")


class VaderSentiment:
    """VADER compound score of each text, ``FloatTensor[B]`` in [-1, 1]."""

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


class ClassifierSentiment:
    """Logit of the positive label of a sequence classifier, ``FloatTensor[B]`` (unbounded).

    Args:
        model: hub id or local directory of an ``AutoModelForSequenceClassification``.
        positive_label: label name (matched case-insensitively against ``config.id2label``)
            or class index.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (longer texts are truncated); a ``textrl_reward.json``
            written by ``stage=rm`` next to the model overrides it and adds its head+tail setting.
        device: where the classifier runs.

    Raises:
        TextRLError: the model cannot be loaded, or the positive label is not among its labels.
    """

    def __init__(
        self,
        model: str,
        positive_label: str | int = "positive",
        batch_size: int = 32,
        max_length: int = 256,
        device: str | torch.device = "cpu",
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not model:
            raise TextRLError(
                "reward.model: got an empty value; expected a classifier hub id or directory "
                "(reward.backend=classifier); train an IMDB sentiment classifier with `textrl "
                "experiment=imdb_classifier hydra.run.dir=runs/imdb_classifier`, then pass "
                "reward.model=runs/imdb_classifier/model"
            )
        if model.startswith((".", "/", "~")) and not os.path.isdir(os.path.expanduser(model)):
            raise TextRLError(
                f"reward.model: directory {model!r} does not exist; expected a sequence-classifier directory"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(model))
            self.model = AutoModelForSequenceClassification.from_pretrained(os.path.expanduser(model)).to(device).eval()
        except (OSError, ValueError) as e:
            raise TextRLError(
                f"reward.model: cannot load a sequence classifier from {model!r} ({first_line(e)})"
            ) from None
        self.index = self._label_index(positive_label)
        settings_path = os.path.join(os.path.expanduser(model), NORMALIZATION_FILE)
        settings = {}
        if os.path.isfile(settings_path):
            with open(settings_path) as f:
                settings = json.load(f)
        # a classifier trained by stage=rm is read the way it was trained (length, head+tail)
        self.scorer = RewardScorer(
            self.model,
            self.tokenizer,
            settings.get("max_length", max_length),
            head_tokens=settings.get("head_tokens"),
            device=device,
        )
        self.batch_size, self.device = batch_size, device

    def _label_index(self, label: str | int) -> int:
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        if isinstance(label, int) or str(label).isdigit():
            index = int(label)
            if index in id2label:
                return index
        else:
            for index, name in id2label.items():
                if name.lower() == str(label).lower():
                    return index
        raise TextRLError(
            f"reward.positive_label: got {label!r}; expected one of the classifier's labels "
            f"{sorted(id2label.values())} or an index in 0..{len(id2label) - 1}"
        )

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = [
            self.scorer.logits(texts[i : i + self.batch_size])[:, self.index].cpu()
            for i in range(0, len(texts), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0)


class SentimentReward:
    """Reward = sentiment of the response (see the module docstring).

    Args:
        backend: ``vader`` or ``classifier``.
        model: classifier hub id or directory (``classifier`` backend only).
        positive_label: the classifier's positive label name or index.
        include_prompt: score ``prompt + response`` instead of the response alone.
        batch_size, max_length: classifier batching and truncation.
        device: where the classifier runs.

    ``__call__(prompts, responses) -> FloatTensor[B]`` (float32).

    Raises:
        TextRLError: the classifier errors above (``backend`` and the sizes are checked at
            startup through :attr:`config_checks`).
    """

    config_checks = {"backend": one_of(*BACKENDS), "max_length": integer(ge=2)}

    def __init__(
        self,
        backend: str = "vader",
        model: str | None = None,
        positive_label: str = "positive",
        include_prompt: bool = False,
        batch_size: int = 32,
        max_length: int = 256,
        device: str = "auto",
    ):
        self.include_prompt = include_prompt
        if backend not in BACKENDS:  # the command checks it at startup; a direct call lands here
            raise TextRLError(f"reward.backend: got {backend!r}; expected one of {list(BACKENDS)}")
        if backend == "vader":
            self.scorer = VaderSentiment()
        else:
            self.scorer = ClassifierSentiment(
                model or "", positive_label, batch_size, max_length, resolve_device(device)
            )

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = [p + r for p, r in zip(prompts, responses)] if self.include_prompt else list(responses)
        return self.scorer(texts)
