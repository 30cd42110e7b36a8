"""The arithmetic tool task: a seeded generator with disjoint splits, the answer checker on
hand-written transcripts, the exact-answer reward and the ``arithmetic:<split>`` data sources."""

from __future__ import annotations

import collections

import pytest
import torch

from textrl.data_sources import DataSources
from textrl.envs.prompts import load_prompts
from textrl.errors import TextRLError
from textrl.interactions import safe_eval
from textrl.rewards.base import score_responses
from textrl.tasks import arithmetic as A
from textrl.training_examples import read_rows, to_demonstration


def test_the_generator_is_seeded_same_problems_every_time():
    first = A.problems("train")
    A.problems.cache_clear()
    A.answers.cache_clear()
    again = A.problems("train")
    assert first == again and first is not again
    assert len(first) == A.SIZES["train"] and len(A.problems("heldout")) == A.SIZES["heldout"]


def test_the_splits_are_disjoint_by_problem_and_share_phrasings_and_steps():
    train, heldout = A.problems("train"), A.problems("heldout")
    # a problem is its kind and numbers (the expression), whatever the phrasing
    assert not {p.expression for p in train} & {p.expression for p in heldout}
    assert len({p.expression for p in train}) == len(train)
    for split in (train, heldout):
        steps = collections.Counter(p.steps for p in split)
        assert steps[1] > 0.2 * len(split) and steps[2] > 0.4 * len(split)
        assert {p.kind for p in split} == {"product", "plus", "minus"}
    openings = lambda ps: {p.question.split(" ")[1] for p in ps}  # noqa: E731
    assert len(openings(heldout)) >= 4 and openings(heldout) == openings(train)


def test_every_expression_evaluates_to_its_answer_and_needs_a_multi_digit_product():
    for p in A.problems("heldout"):
        assert safe_eval(p.expression) == p.answer > 0
        a, b = (int(x) for x in p.expression.replace("+", "*").replace("-", "*").split("*")[:2])
        assert a >= 12 and b >= 12 and str(a) in p.question and str(b) in p.question


def test_the_demonstration_calls_the_tool_then_answers():
    p = A.problems("train")[0]
    demo = to_demonstration(p.row())
    assert demo.prompt == p.question and demo.system is None
    assert demo.turns == (
        ("assistant", f"<calc>{p.expression}</calc>"),
        ("tool", str(p.answer)),
        ("assistant", f"Answer: {p.answer}"),
    )


@pytest.mark.parametrize(
    ("transcript", "answer", "correct", "calls"),
    [
        ("<calc>47*38+125</calc>\n<|im_start|>tool\n1911<|im_end|>\nAnswer: 1911<|im_end|>", 1911, True, 1),
        ("<calc>47*38</calc> 1786 Answer: 1786", 1786, False, 1),  # the wrong expression: no + 125
        ("<calc>47*38+125</calc> 1911 The answer is 1911.", None, False, 1),  # no "Answer: <integer>"
        ("<calc>47*38+125</calc> 1911 Answer: one thousand", None, False, 1),
        ("Answer: 1911", 1911, True, 0),  # right without the tool: correct, and no call counted
        ("Answer: 12 ... no wait. Answer: 1911", 1911, True, 0),  # the last answer counts
        ("Answer: 1911 ... no wait. Answer: 12", 12, False, 0),
        ("", None, False, 0),
    ],
)
def test_the_checker_on_hand_written_transcripts(transcript, answer, correct, calls):
    checked = A.check_answer(transcript, 1911)
    assert (checked.answer, checked.correct, checked.tool_calls) == (answer, correct, calls)
    assert checked.formatted == (answer is not None)


def test_the_reward_pays_the_exact_answer_and_logs_format_and_calls_apart():
    p, q = A.problems("heldout")[:2]
    responses = [f"<calc>{p.expression}</calc> {p.answer} Answer: {p.answer}", f"Answer: {q.answer + 1}"]
    out = score_responses(A.AnswerReward(), [p.question, q.question], responses)
    assert out.scores.tolist() == [1.0, 0.0] and out.scores.dtype == torch.float32
    assert out.components["format"].tolist() == [1.0, 1.0]
    assert out.components["tool_calls"].tolist() == [1.0, 0.0]
    assert out.details[1] == {"answer": q.answer + 1, "expected": q.answer, "correct": False, "tool_calls": 0}
    weighted = score_responses(A.AnswerReward(format_weight=0.1), [q.question], ["no answer"])
    assert weighted.scores.tolist() == [0.0]
    assert score_responses(A.AnswerReward(format_weight=0.1), [q.question], [responses[1]]).scores.item() == (
        pytest.approx(0.1)
    )


def test_the_reward_refuses_a_prompt_that_is_not_a_problem():
    with pytest.raises(TextRLError, match="not a generated problem"):
        score_responses(A.AnswerReward(), ["Once upon a time"], ["Answer: 3"])


def test_generated_sources_read_like_files_through_an_explicit_table():
    sources = DataSources({"arithmetic": A.rows})
    rows = read_rows("arithmetic:heldout", sources=sources)
    assert [r["prompt"] for r in rows] == [p.question for p in A.problems("heldout")]
    first = load_prompts("arithmetic:train", max_prompts=3, sources=sources)
    assert first == [p.question for p in A.problems("train")[:3]]
    with pytest.raises(
        TextRLError, match=r"^sft.data: got 'arithmetic:test'; expected a split in \['train', 'heldout'\]$"
    ):
        read_rows("arithmetic:test", key="sft.data", sources=sources)
    with pytest.raises(TextRLError, match="does not exist"):
        read_rows("nosuchdataset:train.jsonl", sources=sources)
    with pytest.raises(TextRLError, match=r"^data.prompts: got 'arithmetic:train'; expected <name>:<split> .* \[\]"):
        load_prompts("arithmetic:train")  # no table given: no generated dataset resolves
