"""score = Σ_i w_i · n_i(response) − length_penalty · |words(response) − target_length|."""

from __future__ import annotations

import re
from typing import Sequence

import torch

import textrl

DEFAULT_PATTERNS = {
    r"\b(happy|fun|love[sd]?|smiled?|laugh(ed)?|great|kind|friends?)\b": 1.0,
    r"\b(sad|angry|cr(y|ied)|scared|hurt|bad|mean)\b": -1.0,
}
MODES = ("count", "any")


class RegexReward:
    """Weighted regex matches in each response, with an optional length target.

    Args:
        patterns: ``{regex: weight}``; a response gains ``weight`` per match (``mode=count``) or
            once if it matches at all (``mode=any``).
        mode: ``count`` or ``any``.
        max_count: cap on the matches counted per pattern (``None`` = no cap).
        case_sensitive: match case-sensitively.
        include_prompt: score prompt + response instead of the response alone.
        length_penalty: weight of ``|word count − target_length|`` (0 = off).
        target_length: target response length in words (needed when ``length_penalty`` > 0).

    ``__call__(prompts, responses) -> FloatTensor[B]`` (float32).

    Raises:
        textrl.TextRLError: an invalid regex (named, with the regex error), an unknown mode,
            a non-numeric weight, or a length penalty without a target.
    """

    def __init__(
        self,
        patterns: dict = DEFAULT_PATTERNS,
        mode: str = "count",
        max_count: int | None = None,
        case_sensitive: bool = False,
        include_prompt: bool = False,
        length_penalty: float = 0.0,
        target_length: int | None = None,
    ):
        if mode not in MODES:
            raise textrl.TextRLError(f"reward.mode: got {mode!r}; expected one of {list(MODES)}")
        if length_penalty and target_length is None:
            raise textrl.TextRLError(
                "reward.target_length: got null with reward.length_penalty > 0; expected a number of words"
            )
        if not patterns:
            raise textrl.TextRLError("reward.patterns: got an empty mapping; expected {regex: weight, ...}")
        flags = 0 if case_sensitive else re.IGNORECASE
        self.rules = []
        for pattern, weight in dict(patterns).items():
            try:
                compiled = re.compile(pattern, flags)
            except re.error as e:
                raise textrl.TextRLError(f"reward.patterns: {pattern!r} is not a valid regex ({e})") from None
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise textrl.TextRLError(f"reward.patterns[{pattern!r}]: got weight {weight!r}; expected a number")
            self.rules.append((compiled, float(weight)))
        self.mode, self.max_count, self.include_prompt = mode, max_count, include_prompt
        self.length_penalty, self.target_length = length_penalty, target_length

    def score(self, text: str) -> float:
        """The reward of one text (see the class docstring)."""
        total = 0.0
        for regex, weight in self.rules:
            n = sum(1 for _ in regex.finditer(text))
            if self.mode == "any":
                n = min(n, 1)
            if self.max_count is not None:
                n = min(n, self.max_count)
            total += weight * n
        if self.length_penalty:
            total -= self.length_penalty * abs(len(text.split()) - self.target_length)
        return total

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = [p + r for p, r in zip(prompts, responses)] if self.include_prompt else responses
        return torch.tensor([self.score(t) for t in texts], dtype=torch.float32)
