"""Rule-based reward model (RBRM): a rubric of regexes decides the reward.

The GPT-4 System Card (OpenAI, 2023, "rule-based reward models") scores RLHF samples with a
classifier that reads a rubric: it sorts the *prompt* (a harmful request or not) and the
*response* (a refusal, a refusal that still gives the content, plain compliance), and a table
maps the pair to a reward. Refusing harmful requests is rewarded, refusing harmless ones is
penalised. OpenAI's classifier is GPT-4 itself; this one is keyword and regex rules from a
YAML file, so it is instant, deterministic and readable, and just as blunt as its rules.

A rubric (``textrl/data/rubrics/harmlessness.yaml`` is the default) has three parts::

    prompt_categories:   # ordered; the first entry whose keywords/patterns match wins
      - {name: harmful_request, keywords: [bomb], patterns: ['how (do|can) i (kill|hurt)']}
      - {name: benign, default: true}      # exactly one default per list: used when none matches
    response_classes:    # same form
      - {name: disallowed_content, patterns: [...]}
      - {name: refusal, patterns: [...]}
      - {name: compliance, default: true}
    rewards:             # category -> class -> reward
      harmful_request: {refusal: 1.0, disallowed_content: -1.0, compliance: -0.5}
      benign: {refusal: -1.0, disallowed_content: -1.0, compliance: 1.0}

Keywords match whole words or phrases, case-insensitively ("bomb" does not match "bombastic");
patterns are case-insensitive Python regexes found anywhere in the text (``re.search``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import torch
import yaml

from textrl.errors import TextRLError
from textrl.rewards.base import RewardOutput
from textrl.training_examples import read_rows

TOP_KEYS = ("prompt_categories", "response_classes", "rewards")
ENTRY_KEYS = ("name", "description", "keywords", "patterns", "default")
TEXT_FIELDS = ("prompt", "text", "query", "instruction")  # tried in order when text_field is None


def builtin_rubric_dir() -> Path:
    """Folder of the built-in rubrics: ``textrl/data/rubrics`` (package data, not a Hydra config group)."""
    return Path(str(resources.files("textrl.data").joinpath("rubrics")))


def builtin_rubrics() -> list[str]:
    """Names of the built-in rubrics (``<name>.yaml`` files in :func:`builtin_rubric_dir`)."""
    folder = builtin_rubric_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


@dataclass
class Rule:
    """One rubric entry: a name, its compiled matchers ``[(rule string, regex)]``, the default flag."""

    name: str
    matchers: list[tuple[str, re.Pattern]]
    default: bool = False


def classify(rules: Sequence[Rule], text: str) -> tuple[str, str]:
    """``(name, rule)`` of the first rule with a matcher found in ``text``, else ``(default, "default")``."""
    for rule in rules:
        for label, regex in rule.matchers:
            if regex.search(text):
                return rule.name, label
    return next(r.name for r in rules if r.default), "default"


class RuleBasedReward:
    """Rule-based reward model (RBRM) after the GPT-4 System Card (OpenAI 2023).

    Each prompt gets a category and each response a class from the rubric's ordered rules (the
    first match wins, else the list's default entry); the reward is ``rewards[category][class]``.

    Args:
        rubric: a built-in rubric name (``textrl/data/rubrics/<name>.yaml``, default ``harmlessness``)
            or a path to a YAML rubric (format in the module docstring).
        labels: optional ``.jsonl``/``.json`` file (may be ``.gz``) of prompts with a category
            label; a prompt found there (compared after stripping whitespace) gets that category
            (rule ``"label:<label_field>"``) instead of the keyword rules.
        label_field: the row key holding the category in ``labels``.
        text_field: the row key holding the prompt text in ``labels``; ``None`` tries
            ``prompt``, ``text``, ``query``, ``instruction`` in that order.

    ``__call__(prompts, responses) -> FloatTensor[B]`` (float32); ``score_with_details`` also
    returns, per response, which rules fired.

    Raises:
        TextRLError: (one line, starting ``reward.rubric:`` or ``reward.labels:``) an unknown
            rubric name, a missing or invalid YAML file, unknown keys, a list without exactly one
            ``default: true`` entry, an invalid regex, a missing or non-numeric reward, a missing
            labels file, a label that is not a category, a labelled row without prompt text.
    """

    def __init__(
        self,
        rubric: str = "harmlessness",
        labels: Optional[str] = None,
        label_field: str = "label",
        text_field: Optional[str] = None,
    ):
        spec, self.rubric_path = load_rubric(rubric)
        self.categories = parse_rules(spec["prompt_categories"], "prompt_categories", self.rubric_path)
        self.classes = parse_rules(spec["response_classes"], "response_classes", self.rubric_path)
        self.rewards = parse_rewards(
            spec["rewards"], [r.name for r in self.categories], [r.name for r in self.classes], self.rubric_path
        )
        self.label_rule = f"label:{label_field}"
        self.labels = load_labels(labels, label_field, text_field, [r.name for r in self.categories]) if labels else {}

    def classify_prompt(self, prompt: str) -> tuple[str, str]:
        """``(category, rule)``: a label from the labels file, else the first matching category.

        ``rule`` is ``"label:<field>"``, ``"keyword:<kw>"``, ``"pattern:<regex>"`` or ``"default"``.
        """
        label = self.labels.get(prompt.strip())
        return (label, self.label_rule) if label is not None else classify(self.categories, prompt)

    def classify_response(self, response: str) -> tuple[str, str]:
        """``(class, rule)``: the first matching response class, else the default class."""
        return classify(self.classes, response)

    def score_with_details(self, prompts: Sequence[str], responses: Sequence[str]) -> RewardOutput:
        """Rewards and the rules behind them.

        Returns:
            RewardOutput: ``scores`` float32 ``(B,)``; no components; ``details`` B dicts with
            ``category``, ``category_rule``, ``class``, ``class_rule``, ``reward``.

        Raises:
            TextRLError: ``prompts`` and ``responses`` differ in length.
        """
        if len(prompts) != len(responses):
            raise TextRLError(
                f"rbrm reward: got {len(prompts)} prompts and {len(responses)} responses; "
                f"expected one response per prompt"
            )
        details = []
        for prompt, response in zip(prompts, responses):
            category, category_rule = self.classify_prompt(prompt)
            cls, class_rule = self.classify_response(response)
            details.append(
                {
                    "category": category,
                    "category_rule": category_rule,
                    "class": cls,
                    "class_rule": class_rule,
                    "reward": self.rewards[category][cls],
                }
            )
        scores = torch.tensor([d["reward"] for d in details], dtype=torch.float32)
        return RewardOutput(scores, {}, details)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Rewards, ``FloatTensor[B]`` (float32): ``rewards[category(prompt)][class(response)]``."""
        return self.score_with_details(prompts, responses).scores


def load_rubric(rubric: str) -> tuple[dict, str]:
    """The rubric's YAML as a dict with the three top-level keys, and the path it came from.

    Raises:
        TextRLError: unknown built-in name, missing file, invalid YAML, missing/unknown keys.
    """
    is_path = rubric.endswith((".yaml", ".yml")) or "/" in rubric or os.sep in rubric or rubric.startswith((".", "~"))
    path = Path(os.path.expanduser(rubric)) if is_path else builtin_rubric_dir() / f"{rubric}.yaml"
    if not path.is_file():
        if is_path:
            raise TextRLError(
                f"reward.rubric: file {rubric!r} does not exist; expected a YAML rubric path "
                f"or a built-in name {builtin_rubrics()}"
            )
        raise TextRLError(
            f"reward.rubric: got {rubric!r}; expected a built-in rubric {builtin_rubrics()} or a path to a .yaml file"
        )
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or "parse error"
        raise TextRLError(f"reward.rubric: {str(path)!r} is not valid YAML ({problem}{at})") from None
    if not isinstance(spec, dict):
        raise TextRLError(
            f"reward.rubric: {str(path)!r} holds a {type(spec).__name__}; expected a mapping with keys {list(TOP_KEYS)}"
        )
    unknown = sorted(set(map(str, spec)) - set(TOP_KEYS))
    missing = [k for k in TOP_KEYS if k not in spec]
    if unknown or missing:
        bad = f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}"
        raise TextRLError(f"reward.rubric: {str(path)!r} has {bad}; expected exactly {list(TOP_KEYS)}")
    return spec, str(path)


def parse_rules(entries, section: str, path: str) -> list[Rule]:
    """Compile one ordered list of rubric entries (``prompt_categories`` or ``response_classes``).

    Raises:
        TextRLError: not a list of mappings, a missing or repeated name, unknown entry keys,
            keywords/patterns that are not lists of strings, an invalid regex, or not exactly
            one ``default: true`` entry.
    """
    where = f"reward.rubric: {section} in {path!r}"
    if not isinstance(entries, list) or not entries:
        raise TextRLError(f"{where} is {entries!r}; expected a non-empty list of entries")
    rules = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TextRLError(f"{where}: entry {i} is {entry!r}; expected a mapping with a string 'name'")
        name = entry["name"]
        unknown = sorted(set(map(str, entry)) - set(ENTRY_KEYS))
        if unknown:
            raise TextRLError(
                f"{where}: entry {name!r} has unknown key(s) {unknown}; expected some of {list(ENTRY_KEYS)}"
            )
        if name in (r.name for r in rules):
            raise TextRLError(f"{where}: name {name!r} appears twice; expected unique names")
        matchers = []
        for kind in ("keywords", "patterns"):
            items = entry.get(kind) or []
            if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
                raise TextRLError(f"{where}: entry {name!r} has {kind} {items!r}; expected a list of non-empty strings")
            for item in items:
                regex = rf"(?<!\w){re.escape(item)}(?!\w)" if kind == "keywords" else item  # whole words
                try:
                    matchers.append((f"{kind[:-1]}:{item}", re.compile(regex, re.IGNORECASE)))
                except re.error as e:
                    raise TextRLError(
                        f"{where}: entry {name!r} has invalid pattern {item!r} ({e}); "
                        f"expected a Python regular expression"
                    ) from None
        default = entry.get("default", False)
        if not isinstance(default, bool):
            raise TextRLError(f"{where}: entry {name!r} has default {default!r}; expected true or false")
        rules.append(Rule(name, matchers, default))
    defaults = [r.name for r in rules if r.default]
    if len(defaults) != 1:
        raise TextRLError(f"{where} has {len(defaults)} entries with default: true {defaults}; expected exactly one")
    return rules


def parse_rewards(table, categories: list[str], classes: list[str], path: str) -> dict[str, dict[str, float]]:
    """``{category: {class: reward}}``, checked to cover every category × class with a finite number.

    Raises:
        TextRLError: not a mapping, an unknown category or class, a missing cell, a non-numeric
            or non-finite reward.
    """
    where = f"reward.rubric: rewards in {path!r}"
    if not isinstance(table, dict):
        raise TextRLError(f"{where} is {table!r}; expected a mapping category -> class -> reward")
    unknown = sorted(set(map(str, table)) - set(categories))
    if unknown:
        raise TextRLError(f"{where} has unknown categor(ies) {unknown}; expected some of {categories}")
    out = {}
    for category in categories:
        row = table.get(category)
        if not isinstance(row, dict):
            raise TextRLError(
                f"{where}: category {category!r} has {row!r}; expected a mapping class -> reward for {classes}"
            )
        unknown = sorted(set(map(str, row)) - set(classes))
        if unknown:
            raise TextRLError(
                f"{where}: category {category!r} has unknown class(es) {unknown}; expected some of {classes}"
            )
        out[category] = {}
        for cls in classes:
            if cls not in row:
                raise TextRLError(f"{where}: no reward for category {category!r}, class {cls!r}; expected a number")
            value = row[cls]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TextRLError(
                    f"{where}: category {category!r}, class {cls!r} has reward {value!r}; expected a finite number"
                )
            out[category][cls] = float(value)
    return out


def load_labels(path: str, label_field: str, text_field: Optional[str], categories: list[str]) -> dict[str, str]:
    """``{prompt text (stripped): category}`` from a labelled prompt file; rows without a label are skipped.

    Raises:
        TextRLError: a missing or unreadable file, no row with ``label_field``, a labelled row
            without prompt text, a label that is not a category.
    """
    if not os.path.isfile(os.path.expanduser(path)):
        raise TextRLError(
            f"reward.labels: file {path!r} does not exist; expected a .jsonl/.json file of labelled prompts"
        )
    rows = read_rows(path, key="reward.labels")
    fields = (text_field,) if text_field else TEXT_FIELDS
    labels = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or row.get(label_field) is None:
            continue
        label = row[label_field]
        if label not in categories:
            raise TextRLError(
                f"reward.labels: row {i} of {path!r} has {label_field}={label!r}; "
                f"expected one of the rubric's categories {categories}"
            )
        text = next((row[f] for f in fields if isinstance(row.get(f), str)), None)
        if text is None:
            raise TextRLError(
                f"reward.labels: row {i} of {path!r} has keys {sorted(row)}; expected the prompt "
                f"text in one of {list(fields)} (reward.text_field)"
            )
        labels[text.strip()] = label
    if not labels:
        raise TextRLError(
            f"reward.labels: no row of {path!r} has the field {label_field!r}; expected "
            f"rows with a category label (reward.label_field)"
        )
    return labels
