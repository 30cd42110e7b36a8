"""experiment=hh_dialogue: composes; the hh-rlhf conversations split into disjoint train and
held-out dialogues; its CI-sized variant runs RM → RL (2 updates, per-turn rewards) → eval on
held-out dialogues end to end with a tiny policy."""

from __future__ import annotations

import json
import math

import pytest

from textrl.data_sources import DataSources
from textrl.interactions import Dialogue
from textrl.interactions.dialogue import hh_dialogue_rows, human_turns
from textrl.training_examples import to_ranking

from conftest import compose_config, read_jsonl

SOURCES = DataSources({"hh_dialogues": hh_dialogue_rows})


def test_hh_dialogue_composes_rm_rl_and_eval_with_per_turn_rewards():
    cfg = compose_config(["experiment=hh_dialogue"])
    assert cfg.stage == "rlhf" and cfg.reward.name == "learned" and cfg.interaction.name == "dialogue"
    assert cfg.env.turn_reward == "model" and cfg.env.max_turns == 2 and cfg.data.system_prompt
    assert cfg.interaction.path == cfg.rm.data == "hh_dialogues:train"
    assert cfg.interaction.eval_path == cfg.rm.eval_data == "hh_dialogues:heldout"
    tiny = compose_config(["experiment=hh_dialogue_tiny"])
    assert tiny.policy.model.endswith("tinystories-656k") and tiny.trainer.updates == 2


def test_held_out_dialogues_are_disjoint_from_rl_and_rm_training(assets):
    train, heldout = hh_dialogue_rows("train"), hh_dialogue_rows("heldout")
    first = lambda rows: {human_turns(r["chosen"])[0] for r in rows}  # noqa: E731
    assert len(train) > 2 * len(heldout) >= 2 * 500 and not first(train) & first(heldout)  # ≥ 500 held-out pairs
    dialogue = Dialogue(
        path="hh_dialogues:train", eval_path="hh_dialogues:heldout", prompt_layout="text", sources=SOURCES
    )
    assert len(dialogue.eval_prompts) >= 24 and not set(dialogue.prompts) & set(dialogue.eval_prompts)
    rm_prompts = {human_turns(to_ranking(r).prompt)[0] for r in train}
    assert not rm_prompts & set(dialogue.eval_prompts)


def test_hh_dialogue_tiny_runs_rm_rl_and_eval(assets, tmp_path, cli):
    out = tmp_path / "hh"
    result = cli("experiment=hh_dialogue_tiny", f"hydra.run.dir={out}", "trainer.progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "sft").exists()  # stage=rlhf: no SFT step
    rm = json.loads((out / "rm" / "summary.json").read_text())
    assert rm["train_examples"] > 0 and 0 <= rm["eval_after"]["pairwise_accuracy"] <= 1
    metrics = read_jsonl(out / "rl" / "metrics.jsonl")
    assert len(metrics) == 2 and all(math.isfinite(m["turn/reward_mean"]) and "turn/reward_1" in m for m in metrics)
    result_eval = json.loads((out / "eval" / "eval.json").read_text())
    for block in ("policy", "reference"):
        stats = result_eval[block]
        assert math.isfinite(stats["turn_reward_mean"]) and "turn_reward_1" in stats and stats["turns"] >= 1
    heldout = set(Dialogue(path="hh_dialogues:heldout", prompt_layout="hh", sources=SOURCES).prompts)
    samples = read_jsonl(out / "eval" / "eval_samples.jsonl")
    assert samples and all(s["prompt"] in heldout for s in samples)
    assert all(sum(s["policy_turn_rewards"]) == pytest.approx(s["policy_reward"], abs=1e-5) for s in samples)
    assert "reward per turn" in result.stdout
