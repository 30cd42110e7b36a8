"""Arithmetic word problems for the calculator tool task (``experiment=calculator``).

A seeded generator writes problems such as *"A farmer plants 47 rows with 38 trees in each row,
and 125 more trees by the gate. How many trees are there in all?"* (``47*38+125 = 1911``): products
of two-digit numbers, alone (one step) or followed by an addition or a subtraction (two steps),
each kind in several phrasings. A 135M model cannot multiply two-digit numbers in its head, but it
can hand the expression to the ``calculator`` interaction (``<calc>47*38+125</calc>``) and copy the
result into its final answer, ``Answer: 1911``.

The problem set is fixed: :data:`SEED` draws it, and a problem belongs to the ``heldout`` split
when a stable hash of its numbers and kind says so (:func:`split_of`), so ``train`` and
``heldout`` are disjoint by problem (the same numbers in another phrasing are the same problem)
and share every phrasing: ``heldout`` measures new numbers in known sentences. The third split,
``heldout_wording``, is held out by wording as well: its problems are drawn with other scenes and
other sentence templates (:data:`HELDOUT_WORDING`), none of which occurs in ``train``, from the
numbers :func:`split_of` holds out, with the same answer format and the same mix of one- and
two-step problems. Each row (:func:`rows`) has ``prompt`` (the question), ``answer``
(int), ``expression``, ``steps`` and ``messages``, a demonstration of the tool call for
multi-turn SFT: ``user`` question, ``assistant`` ``<calc>EXPR</calc>``, ``tool`` value,
``assistant`` ``Answer: VALUE``.

The answer checker is :func:`check_answer`: the last ``Answer: <integer>`` in the response is the
answer; it must equal the problem's.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from textrl.config import number
from textrl.errors import TextRLError

SEED = 2026
"""Seed of the problem set (the task is a fixed benchmark, like a dataset file)."""
SIZES = {"train": 2000, "heldout": 400, "heldout_wording": 400}
"""Problems per split."""
HELDOUT_EVERY = 5
"""One problem in this many (by :func:`split_of`'s hash) is held out."""
STEP_MIX = {1: 0.35, 2: 0.65}
"""Fraction of one-step (``a*b``) and two-step (``a*b+c``, ``a*b-c``) problems."""
ANSWER = re.compile(r"Answer:\s*(-?\d+)")
TOOL_CALL = re.compile(r"<calc>(.*?)</calc>", re.S)


@dataclass(frozen=True)
class Wording:
    """The sentences a split's problems are written in. A question is a scene followed by a tail:
    ``(scene + tail).format(a=..., b=..., c=..., thing=...)``.

    Attributes:
        scenes: ``(thing, scene)`` pairs; the scene puts ``{a}`` containers of ``{b}`` things each.
        plus: tails that add ``{c}`` things and ask for the total (two steps: ``a*b+c``).
        minus: tails that take ``{c}`` things away and ask what is left (two steps: ``a*b-c``).
        only: tails that ask for the product alone (one step: ``a*b``).
    """

    scenes: tuple[tuple[str, str], ...]
    plus: tuple[str, ...]
    minus: tuple[str, ...]
    only: tuple[str, ...]

    def templates(self) -> tuple[str, ...]:
        """Every scene and tail template."""
        return tuple(scene for _, scene in self.scenes) + self.plus + self.minus + self.only


TRAIN_WORDING = Wording(
    scenes=(
        ("trees", "A farmer plants {a} rows with {b} trees in each row"),
        ("pencils", "A store has {a} boxes with {b} pencils in each box"),
        ("seats", "A theater has {a} rows of {b} seats"),
        ("bottles", "A truck carries {a} crates, each holding {b} bottles"),
        ("books", "A library has {a} shelves with {b} books on each shelf"),
        ("eggs", "A farm packs {a} cartons with {b} eggs in each carton"),
    ),
    plus=(
        ", and {c} more {thing} are in a pile nearby. How many {thing} are there in all?",
        ". Then {c} more {thing} arrive. How many {thing} are there now?",
    ),
    minus=(
        ", but {c} of the {thing} are damaged. How many {thing} are not damaged?",
        ". Then {c} {thing} are given away. How many {thing} are left?",
    ),
    only=(". How many {thing} are there?", ". How many {thing} is that in total?"),
)
"""The wording of ``train`` and ``heldout``."""
HELDOUT_WORDING = Wording(
    scenes=(
        ("stamps", "Maria fills {a} album pages, putting {b} stamps on every page"),
        ("apples", "An orchard ships {a} baskets that each contain {b} apples"),
        ("chairs", "A school furnishes {a} classrooms, placing {b} chairs in every classroom"),
        ("cans", "A food drive collects {a} bags, every bag holding {b} cans"),
        ("tiles", "A builder lays {a} rows, setting {b} tiles in every row"),
        ("marbles", "Sam owns {a} jars, each jar containing {b} marbles"),
    ),
    plus=(
        ". Later, {c} extra {thing} are added. What is the total number of {thing}?",
        ". A friend brings another {c} {thing}. Find the number of {thing} altogether.",
    ),
    minus=(
        ". Afterwards {c} {thing} are lost. What number of {thing} remain?",
        ". Suppose {c} {thing} get sold. Find the number of {thing} still left.",
    ),
    only=(". What is the total number of {thing}?", ". Find the number of {thing} altogether."),
)
"""The wording of ``heldout_wording``: scenes, things and templates that never occur in training."""


@dataclass(frozen=True)
class Problem:
    """One word problem.

    Attributes:
        question: the problem text (the prompt).
        expression: the arithmetic that solves it, e.g. ``"47*38+125"``.
        answer: its value (int).
        steps: number of operations (1 or 2).
        kind: ``"product"``, ``"plus"`` or ``"minus"``.
    """

    question: str
    expression: str
    answer: int
    steps: int
    kind: str

    def demonstration(self) -> list[dict[str, str]]:
        """The tool-use demonstration: ``user`` question, ``assistant`` call, ``tool`` value,
        ``assistant`` answer (chat ``messages``; the system prompt is the config's)."""
        return [
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": f"<calc>{self.expression}</calc>"},
            {"role": "tool", "content": str(self.answer)},
            {"role": "assistant", "content": f"Answer: {self.answer}"},
        ]

    def row(self) -> dict:
        """The problem as a data row: ``prompt``, ``answer``, ``expression``, ``steps``, ``kind``,
        ``messages``."""
        return {
            "prompt": self.question,
            "answer": self.answer,
            "expression": self.expression,
            "steps": self.steps,
            "kind": self.kind,
            "messages": self.demonstration(),
        }


def split_of(kind: str, numbers: tuple[int, ...]) -> str:
    """``"heldout"`` or ``"train"`` for a problem, from a stable hash (sha256) of its kind and
    numbers: the phrasing does not matter, so a held-out problem never appears in training."""
    digest = hashlib.sha256(f"{kind}:{numbers}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") % HELDOUT_EVERY == 0 else "train"


def draw_problem(rng: random.Random, wording: Wording = TRAIN_WORDING) -> tuple[Problem, tuple[int, ...]]:
    """One problem drawn with ``rng`` in ``wording``, and the numbers that identify it (with its
    kind)."""
    thing, scene = rng.choice(wording.scenes)
    a, b = rng.randint(12, 99), rng.randint(12, 99)
    steps = 1 if rng.random() < STEP_MIX[1] else 2
    if steps == 1:
        kind, c, tail, expression, answer = "product", 0, rng.choice(wording.only), f"{a}*{b}", a * b
    elif rng.random() < 0.5:
        c = rng.randint(11, 199)
        kind, tail, expression, answer = "plus", rng.choice(wording.plus), f"{a}*{b}+{c}", a * b + c
    else:
        c = rng.randint(11, min(199, a * b - 1))
        kind, tail, expression, answer = "minus", rng.choice(wording.minus), f"{a}*{b}-{c}", a * b - c
    question = (scene + tail).format(a=a, b=b, c=c, thing=thing)
    return Problem(question, expression, answer, steps, kind), (a, b, c)


@lru_cache(maxsize=None)
def problems(split: str) -> tuple[Problem, ...]:
    """The :data:`SIZES` ``[split]`` problems of ``split`` (``train``, ``heldout`` or
    ``heldout_wording``), always the same ones, no problem twice. ``train`` and ``heldout`` are
    drawn together from :data:`SEED` in :data:`TRAIN_WORDING` and sorted by :func:`split_of`;
    ``heldout_wording`` is drawn apart, from ``SEED + 1`` in :data:`HELDOUT_WORDING`, keeping only
    the problems :func:`split_of` holds out (so none is a training problem in other words).

    Raises:
        ValueError: an unknown split (``"expected a split in ['train', 'heldout', 'heldout_wording']"``).
    """
    if split not in SIZES:
        raise ValueError(f"expected a split in {list(SIZES)}")
    if split == "heldout_wording":
        return _draw({"heldout": SIZES[split]}, seed=SEED + 1, wording=HELDOUT_WORDING, until="heldout")["heldout"]
    both = {"train": SIZES["train"], "heldout": SIZES["heldout"]}
    return _draw(both, seed=SEED, wording=TRAIN_WORDING, until=split)[split]


def _draw(sizes: dict[str, int], *, seed: int, wording: Wording, until: str) -> dict[str, tuple[Problem, ...]]:
    """Draw problems from ``seed`` in ``wording``, sorting them by :func:`split_of` into the splits
    of ``sizes`` (a split not in ``sizes`` takes none, a full one no more), until ``until`` is full."""
    rng = random.Random(seed)
    out: dict[str, list[Problem]] = {name: [] for name in sizes}
    seen: set[tuple] = set()
    while len(out[until]) < sizes[until]:
        problem, numbers = draw_problem(rng, wording)
        key = (problem.kind, numbers)
        if key in seen:
            continue
        seen.add(key)
        where = split_of(*key)
        if where in out and len(out[where]) < sizes[where]:
            out[where].append(problem)
    return {name: tuple(found) for name, found in out.items()}


def rows(split: str) -> list[dict]:
    """The rows of ``split`` (see :meth:`Problem.row`), for ``data.prompts=arithmetic:<split>``
    and ``sft.data=arithmetic:<split>``.

    Raises:
        ValueError: an unknown split.
    """
    return [p.row() for p in problems(split)]


@lru_cache(maxsize=None)
def answers() -> dict[str, int]:
    """Question → answer over every split."""
    return {p.question: p.answer for split in SIZES for p in problems(split)}


@dataclass(frozen=True)
class Checked:
    """What :func:`check_answer` found in a response.

    Attributes:
        answer: the last ``Answer: <integer>`` (int), or ``None`` when there is none.
        correct: ``answer`` equals the expected answer.
        tool_calls: number of ``<calc>...</calc>`` calls in the response.
    """

    answer: int | None
    correct: bool
    tool_calls: int

    @property
    def formatted(self) -> bool:
        """Whether the response holds an ``Answer: <integer>``."""
        return self.answer is not None


def check_answer(response: str, expected: int) -> Checked:
    """Check a transcript's final answer: the last ``Answer: <integer>`` in ``response`` (a
    policy's whole episode text, tool results included) must equal ``expected``. An answer
    written without a tool call counts as an answer (``tool_calls`` says there was none)."""
    found = ANSWER.findall(response)
    answer = int(found[-1]) if found else None
    return Checked(answer, answer == expected, len(TOOL_CALL.findall(response)))


class AnswerReward:
    """``reward=arithmetic``: 1 for the exact final answer to the prompt's problem, else 0.

    The prompt must be one of the generated problems (:func:`answers`); the response is the whole
    episode (tool calls and results included) and :func:`check_answer` reads its last
    ``Answer: <integer>``. The components, logged as ``reward/correct``, ``reward/format`` and
    ``reward/tool_calls``, are the exact match (0/1), whether an ``Answer: <integer>`` was written
    (0/1) and the number of calls; the score is ``correct + format_weight * format``.

    Args:
        format_weight: weight of the format term in the score (0: the reward is the exact match
            alone).

    Raises:
        TextRLError: (when scoring) a prompt that is not a generated arithmetic problem.
    """

    config_checks = {"format_weight": number()}

    def __init__(self, format_weight: float = 0.0):
        self.format_weight = float(format_weight)

    def score_with_details(self, prompts, responses):
        """Score B episodes; returns a :class:`~textrl.rewards.base.RewardOutput` with ``scores``
        float32 ``(B,)``, the three components and one ``{"answer", "expected", "correct",
        "tool_calls"}`` dict per episode."""
        import torch

        from textrl.rewards.base import RewardOutput

        known = answers()
        checked, expected = [], []
        for prompt in prompts:
            if prompt not in known:
                raise TextRLError(
                    f"reward=arithmetic: prompt {prompt[:60]!r} is not a generated problem; "
                    "expected data.prompts=arithmetic:train, arithmetic:heldout or arithmetic:heldout_wording"
                )
        for prompt, response in zip(prompts, responses):
            expected.append(known[prompt])
            checked.append(check_answer(response, known[prompt]))
        correct = torch.tensor([float(c.correct) for c in checked])
        formatted = torch.tensor([float(c.formatted) for c in checked])
        calls = torch.tensor([float(c.tool_calls) for c in checked])
        details = [
            {"answer": c.answer, "expected": e, "correct": c.correct, "tool_calls": c.tool_calls}
            for c, e in zip(checked, expected)
        ]
        return RewardOutput(
            correct + self.format_weight * formatted,
            {"correct": correct, "format": formatted, "tool_calls": calls},
            details,
        )

    def __call__(self, prompts, responses):
        """The scores alone, float32 ``(B,)`` (see :meth:`score_with_details`)."""
        return self.score_with_details(prompts, responses).scores
