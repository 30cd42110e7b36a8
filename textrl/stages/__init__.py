"""Stage entry points, one per ``stage=`` value, in one table (:data:`STAGES`).

Each entry is ``stage(cfg, registry, run_dir, device) -> summary dict``; :func:`textrl.run.run`
dispatches on ``cfg.stage`` through it. ``sft``, ``rm``, ``rl`` and ``eval`` run with their
loggers registered (:func:`textrl.stages.runner.run_logged`); ``instructgpt`` registers none
itself and runs the four in turn, each with its own; ``rlhf`` does the same without SFT.
"""

from __future__ import annotations

from functools import partial

from textrl.stages import evaluate, instructgpt, reward_model, rl, sft
from textrl.stages.runner import run_logged

STAGES = {
    "sft": partial(run_logged, sft.train),
    "rm": partial(run_logged, reward_model.train),
    "rl": partial(run_logged, rl.train),
    "eval": partial(run_logged, evaluate.evaluate),
    "instructgpt": instructgpt.run_pipeline,
    "rlhf": partial(instructgpt.run_pipeline, with_sft=False),
}
"""``stage=<name>`` → its entry point, ``(cfg, registry, run_dir, device) -> summary``; the keys
are :data:`textrl.config.choices.STAGES`."""

__all__ = ["STAGES"]
