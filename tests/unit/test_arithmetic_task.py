"""The arithmetic tool task: a seeded generator with disjoint splits (``heldout_wording`` also
disjoint from training by scene and sentence), the answer checker on hand-written transcripts, the
exact-answer reward and the ``arithmetic:<split>`` data sources."""

from __future__ import annotations

import collections
import re

import pytest
import torch

from textrl.data_sources import DataSources
from textrl.prompts import load_prompts
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


def fragments(template: str) -> list[str]:
    """The literal words of a template between its ``{placeholders}``, edge punctuation stripped."""
    parts = (part.strip(" ,.?") for part in re.split(r"\{\w+\}", template))
    return [part for part in parts if re.search("[A-Za-z]", part)]


def uses(question: str, fragment: str) -> bool:
    """Whether ``fragment`` occurs in ``question`` as whole words (any case)."""
    return re.search(rf"\b{re.escape(fragment)}\b", question, re.I) is not None


def test_heldout_wording_shares_no_scene_thing_or_sentence_with_training():
    train, wording = A.problems("train"), A.problems("heldout_wording")
    train_fragments = {f for t in A.TRAIN_WORDING.templates() for f in fragments(t)}
    new_fragments = {f for t in A.HELDOUT_WORDING.templates() for f in fragments(t)}
    # the check can see a template: every fragment of either wording occurs in its own split's text
    assert all(any(uses(q.question, f) for q in train) for f in train_fragments)
    assert all(any(uses(q.question, f) for q in wording) for f in new_fragments)
    assert not [(f, q.question) for q in wording for f in train_fragments if uses(q.question, f)][:3]
    assert not [(f, q.question) for q in train for f in new_fragments if uses(q.question, f)][:3]
    train_things = {thing for thing, _ in A.TRAIN_WORDING.scenes}
    assert not [q.question for q in wording if train_things & set(re.findall(r"[a-z]+", q.question))][:3]
    openings = lambda ps: {" ".join(p.question.split(" ")[:2]) for p in ps}  # noqa: E731
    assert len(openings(wording)) == len(A.HELDOUT_WORDING.scenes) and not openings(wording) & openings(train)


def test_heldout_wording_is_seeded_new_problems_in_the_same_format_and_mix():
    first = A.problems("heldout_wording")
    A.problems.cache_clear()
    A.answers.cache_clear()
    assert A.problems("heldout_wording") == first and len(first) == A.SIZES["heldout_wording"]
    assert len({p.expression for p in first}) == len(first)
    assert not {p.expression for p in first} & {p.expression for p in A.problems("train")}
    for split in ("train", "heldout_wording"):
        problems = A.problems(split)
        one_step = sum(p.steps == 1 for p in problems) / len(problems)
        assert abs(one_step - A.STEP_MIX[1]) < 0.06, (split, one_step)
        assert {p.kind for p in problems} == {"product", "plus", "minus"}
    for p in first:
        assert safe_eval(p.expression) == p.answer > 0
        a, b = (int(x) for x in re.split(r"[*+-]", p.expression)[:2])
        assert 12 <= a <= 99 and 12 <= b <= 99 and str(a) in p.question and str(b) in p.question
        assert p.row()["messages"][-1] == {"role": "assistant", "content": f"Answer: {p.answer}"}


def test_the_checker_and_the_reward_work_on_heldout_wording():
    sources = DataSources({"arithmetic": A.rows})
    rows = read_rows("arithmetic:heldout_wording", key="eval.prompts", sources=sources)
    assert [r["prompt"] for r in rows] == [p.question for p in A.problems("heldout_wording")]
    p, q = A.problems("heldout_wording")[:2]
    right = f"<calc>{p.expression}</calc> {p.answer} Answer: {p.answer}"
    assert A.check_answer(right, p.answer).correct and not A.check_answer(f"Answer: {q.answer + 1}", q.answer).correct
    out = score_responses(A.AnswerReward(), [p.question, q.question], [right, f"Answer: {q.answer + 1}"])
    assert out.scores.tolist() == [1.0, 0.0]


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
        TextRLError,
        match=r"^sft.data: got 'arithmetic:test'; expected a split in \['train', 'heldout', 'heldout_wording'\]$",
    ):
        read_rows("arithmetic:test", key="sft.data", sources=sources)
    with pytest.raises(TextRLError, match="does not exist"):
        read_rows("nosuchdataset:train.jsonl", sources=sources)
    with pytest.raises(TextRLError, match=r"^data.prompts: got 'arithmetic:train'; expected <name>:<split> .* \[\]"):
        load_prompts("arithmetic:train")  # no table given: no generated dataset resolves
