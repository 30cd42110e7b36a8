"""experiment=calculator: composes, and its CI-sized variant runs SFT → RL → eval end to end on the
generated arithmetic problems with a tiny policy; the SmolLM2 layout of a demonstration is the
episode the env builds when the policy samples the demonstration's tokens."""

from __future__ import annotations

import json
import math

import pytest

from textrl.stages.sft import IGNORE, encode_conversation
from textrl.tasks import arithmetic as A
from textrl.training_examples import format_prompt, to_demonstration

from conftest import compose_config, read_jsonl


def test_calculator_composes_with_the_tool_the_reward_and_disjoint_splits():
    cfg = compose_config(["experiment=calculator"])
    assert cfg.stage == "instructgpt" and cfg.reward.name == "arithmetic" and cfg.interaction.name == "calculator"
    assert cfg.data.prompts == "arithmetic:train" and cfg.sft.data == "arithmetic:train"
    assert cfg.eval.prompts == "arithmetic:heldout" and "<calc>" in cfg.data.system_prompt
    assert cfg.env.max_turns >= 2 and cfg.algo.epochs >= 2


def test_calculator_tiny_runs_sft_rl_and_eval(assets, tmp_path, cli):
    out = tmp_path / "calc"
    result = cli("experiment=calculator_tiny", f"hydra.run.dir={out}", "trainer.progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "rm").exists()  # a verifier reward: no reward model to train
    sft = json.loads((out / "sft" / "summary.json").read_text())
    assert sft["train_examples"] > 0 and math.isfinite(sft["eval_loss_after"])
    metrics = read_jsonl(out / "rl" / "metrics.jsonl")
    assert len(metrics) == 2 and all("reward/correct" in m and "reward/tool_calls" in m for m in metrics)
    result_eval = json.loads((out / "eval" / "eval.json").read_text())
    for block in ("policy", "reference"):
        stats = result_eval[block]
        assert 0 <= stats["accuracy"] <= 1 and 0 <= stats["tool_call_rate"] <= 1
        assert stats["turns"] >= 1 and stats["episode_length"] >= stats["mean_length"] > 0
    samples = read_jsonl(out / "eval" / "eval_samples.jsonl")
    heldout = {p.question for p in A.problems("heldout")}
    assert samples and all(s["prompt"] in heldout for s in samples)
    assert "accuracy (exact match)" in result.stdout and "tool-call rate" in result.stdout
    for picture in ("sft/report.png", "rl/report.png", "eval/eval_report.png"):  # one per stage
        assert (out / picture).read_bytes()[:4] == b"\x89PNG", picture


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from textrl.policies.loading import load_tokenizer

    cfg = compose_config(["experiment=calculator"])
    return load_tokenizer(cfg.policy.model, cfg.policy.gguf_file), cfg


def test_a_smollm2_demonstration_is_the_calculator_episode_token_for_token(smollm2_tokenizer):
    """The SFT layout of a tool-use demonstration equals the state of the multi-turn env with the
    real calculator after the policy samples the demonstration's assistant tokens."""
    from textrl.envs import TokenGenEnv
    from textrl.interactions import Calculator

    tok, cfg = smollm2_tokenizer
    problem = A.problems("heldout")[3]
    demo = to_demonstration(problem.row())
    system = cfg.data.system_prompt
    out = encode_conversation(tok, demo, max_length=512, system=system, stop_strings=Calculator.stop_strings)
    env = TokenGenEnv(
        tokenizer=tok,
        prompts=[problem.question],
        reward_model=A.AnswerReward(),
        max_new_tokens=cfg.env.max_new_tokens,
        max_prompt_tokens=cfg.env.max_prompt_tokens,
        format_prompt=lambda p: format_prompt(tok, p, "auto", system),
        interaction=Calculator(),
        max_turns=cfg.env.max_turns,
        max_episode_tokens=cfg.env.max_episode_tokens,
    )
    obs, _ = env.reset(options={"prompt": problem.question})
    actions = [i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE]
    for k, a in enumerate(actions):
        obs, reward, term, trunc, info = env.step(a)
        assert (term or trunc) == (k == len(actions) - 1)
    assert term and reward == 1.0 and info["turns"] == 2
    kept = obs["attention_mask"].astype(bool)
    assert obs["input_ids"][kept].tolist() == out["input_ids"]
    assert obs["action_mask"][kept].tolist() == [int(label != IGNORE) for label in out["labels"]]
