"""Regex reward plugin: hand-computed scores, errors, YAML presets and a CLI run on real assets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import textrl
from textrl_regex_reward import RegexReward

ASSETS = Path(os.environ.get("TEXTRL_ASSETS", Path(__file__).resolve().parents[4] / "shared" / "assets"))


def test_weighted_counts_by_hand():
    reward = RegexReward({r"\bdog\b": 1.0, r"\bcat\b": -0.5})
    scores = reward(["p", "p", "p"], ["the dog saw a dog", "a cat and a dog", "Cat CAT"])
    assert scores.dtype == torch.float32
    assert scores.tolist() == [2.0, 0.5, -1.0]  # 2·1; 1 − 0.5; case-insensitive 2·(−0.5)


def test_any_mode_cap_case_and_length_penalty():
    assert RegexReward({"a": 1.0}, mode="any")([""], ["aaaa"]).tolist() == [1.0]
    assert RegexReward({"a": 1.0}, max_count=2)([""], ["aaaa"]).tolist() == [2.0]
    assert RegexReward({"A": 1.0}, case_sensitive=True)([""], ["aAa"]).tolist() == [1.0]
    shaped = RegexReward({"x": 0.0}, length_penalty=0.5, target_length=3)
    assert shaped(["", ""], ["one two three", "one"]).tolist() == [0.0, -1.0]  # |1 − 3| · 0.5
    assert RegexReward({"dog": 1.0}, include_prompt=True)(["dog "], ["dog"]).tolist() == [2.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patterns={"(": 1.0}), r"'\(' is not a valid regex"),
        (dict(mode="sometimes"), "reward.mode: got 'sometimes'"),
        (dict(patterns={"a": "lots"}), "got weight 'lots'"),
        (dict(length_penalty=0.1), "reward.target_length"),
        (dict(patterns={}), "empty mapping"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(textrl.TextRLError, match=message):
        RegexReward(**kwargs)


def run(*args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TEXTRL_ASSETS": str(ASSETS)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "textrl",
            "experiment=tinystories_sentiment",
            "trainer.updates=2",
            "rollout.batch_size=8",
            "algo.minibatch_size=4",
            "env.max_new_tokens=8",
            "trainer.progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


needs_assets = pytest.mark.skipif(
    not (ASSETS / "tinystories-656k").is_dir(), reason=f"real assets not found at {ASSETS}"
)


@needs_assets
def test_reward_regex_trains_through_the_cli_with_kwargs(tmp_path):
    result = run("reward=regex", "reward.patterns={the: 0.25, was: -1}", "reward.mode=count", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for s in samples:  # the score is exactly what the configured pattern gives
        text = s["response"].lower()
        assert s["score"] == pytest.approx(0.25 * text.count("the") - text.count("was"))


@needs_assets
def test_yaml_preset_from_the_plugins_search_path(tmp_path):
    """The package ships conf/reward/happy_words.yaml through a Hydra SearchPathPlugin."""
    result = run("reward=happy_words", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    config = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "name: regex" in config and "mode: any" in config
